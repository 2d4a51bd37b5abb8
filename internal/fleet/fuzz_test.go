package fleet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
)

// FuzzPeek: what Attest reads from an unverified body before it verifies it never panics
// and yields a device ID only of the right form.
func FuzzPeek(f *testing.F) {
	f.Add([]byte(`{"signed":{"device_id":"` + hex64 + `","nonce":"n"},"signatures":[]}`))
	f.Add([]byte(`{"signed":"x"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := peek(data)
		if err == nil && len(c.DeviceID) != 64 {
			t.Fatalf("peek accepted device ID %q", c.DeviceID)
		}
	})
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// FuzzParseGrant: a recovery token of any shape is refused unless this key signed a
// grant, and parsing never panics.
func FuzzParseGrant(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	s := &Service{cfg: Config{Director: key}}
	now := time.Now()
	r, err := s.newRecovery(device.Device{ID: hex64, TenantID: "tnt_x"}, now)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(r.Token)
	f.Add(RecoveryPrefix)
	f.Add(RecoveryPrefix + "e30")
	f.Add("moat_tok_x.y")
	f.Fuzz(func(t *testing.T, token string) {
		g, err := parseGrant(token, &key.PublicKey, now)
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
			}
			return
		}
		if token != r.Token || g.DeviceID != hex64 {
			t.Fatalf("accepted a token this test never signed: %q", token)
		}
	})
}
