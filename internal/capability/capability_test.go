package capability_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/capability"
)

const devA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestIssueVerify(t *testing.T) {
	k := key(t)
	now := time.Now()
	data, err := capability.Issue(k, devA, "tnt_a", now, 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := capability.Verify(data, &k.PublicKey, capability.Expect{DeviceID: devA, TenantID: "tnt_a", Now: now})
	if err != nil || c.Purpose != capability.Development {
		t.Fatalf("Verify = %+v, %v", c, err)
	}
}

// TestVerify_Rejects: another device's or tenant's capability, another key's, an expired
// one, and any changed byte are refused.
func TestVerify_Rejects(t *testing.T) {
	k, other := key(t), key(t)
	now := time.Now()
	data, err := capability.Issue(k, devA, "tnt_a", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := capability.Expect{DeviceID: devA, TenantID: "tnt_a", Now: now}
	devB := strings.Repeat("b", 64)
	cases := map[string]struct {
		data []byte
		pub  *ecdsa.PublicKey
		want capability.Expect
		err  error
	}{
		"another device": {data, &k.PublicKey, capability.Expect{DeviceID: devB, TenantID: "tnt_a", Now: now}, capability.ErrWrongDevice},
		"another tenant": {data, &k.PublicKey, capability.Expect{DeviceID: devA, TenantID: "tnt_b", Now: now}, capability.ErrWrongDevice},
		"another key":    {data, &other.PublicKey, want, capability.ErrSignature},
		"expired":        {data, &k.PublicKey, capability.Expect{DeviceID: devA, TenantID: "tnt_a", Now: now.Add(2 * time.Hour)}, capability.ErrExpired},
		"not yet":        {data, &k.PublicKey, capability.Expect{DeviceID: devA, TenantID: "tnt_a", Now: now.Add(-time.Hour)}, capability.ErrExpired},
		"device swapped": {bytes.ReplaceAll(data, []byte(devA), []byte(devB)), &k.PublicKey, capability.Expect{DeviceID: devB, TenantID: "tnt_a", Now: now}, capability.ErrSignature},
	}
	for name, tc := range cases {
		if _, err := capability.Verify(tc.data, tc.pub, tc.want); !errors.Is(err, tc.err) {
			t.Errorf("%s: Verify = %v, want %v", name, err, tc.err)
		}
	}
	for i := range data {
		for bit := range 8 {
			b := bytes.Clone(data)
			b[i] ^= 1 << bit
			if _, err := capability.Verify(b, &k.PublicKey, want); err == nil {
				t.Fatalf("flipping bit %d of byte %d still verifies", bit, i)
			}
		}
	}
	if _, err := capability.Issue(k, "not-a-device", "tnt_a", now, time.Hour); err == nil {
		t.Error("Issue for a bad device ID succeeded")
	}
	if _, err := capability.Issue(k, devA, "tnt_a", now, 31*24*time.Hour); err == nil {
		t.Error("Issue beyond the maximum validity succeeded")
	}
}

func FuzzVerify(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	data, err := capability.Issue(k, devA, "tnt_a", now, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{"signed":{},"signatures":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := capability.Verify(b, &k.PublicKey, capability.Expect{DeviceID: devA, TenantID: "tnt_a", Now: now})
		if err == nil && (!bytes.Equal(b, data) || c.DeviceID != devA) {
			t.Fatalf("accepted bytes this test never signed: %q", b)
		}
	})
}
