package nonce

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/device"
)

func newIssuer(t *testing.T, kek byte) *Issuer {
	t.Helper()
	i, err := NewIssuer(bytes.Repeat([]byte{kek}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// TestIssuer_RejectsForgedAndExpired: a nonce opens only for the device it was issued to,
// under the same key, before it expires; any other is refused as forged or expired.
func TestIssuer_RejectsForgedAndExpired(t *testing.T) {
	t.Parallel()
	i, other := newIssuer(t, 1), newIssuer(t, 2)
	now := time.Unix(1_800_000_000, 0)
	n := i.Issue("dev-a", now)
	if len(n.Nonce) != 43 || !n.ExpiresAt.Equal(now.Add(TTL)) {
		t.Fatalf("Issue = %+v; want %d bytes of base64 expiring at %s", n, attest.NonceBytes, now.Add(TTL))
	}
	if exp, err := i.open("dev-a", n.Nonce, now); err != nil || !exp.Equal(n.ExpiresAt) {
		t.Fatalf("open the device's own nonce = %s, %v", exp, err)
	}
	tampered := []byte(n.Nonce)
	tampered[10] ^= 1
	for _, tc := range []struct {
		name   string
		is     *Issuer
		id     device.ID
		nonce  string
		at     time.Time
		reason error
	}{
		{"another device's", i, "dev-b", n.Nonce, now, errForged},
		{"another key's", other, "dev-a", n.Nonce, now, errForged},
		{"tampered", i, "dev-a", string(tampered), now, errForged},
		{"not base64", i, "dev-a", "!!", now, errForged},
		{"expired", i, "dev-a", n.Nonce, now.Add(TTL), errExpired},
	} {
		if _, err := tc.is.open(tc.id, tc.nonce, tc.at); !errors.Is(err, tc.reason) {
			t.Errorf("%s nonce: %v, want %v", tc.name, err, tc.reason)
		}
	}
}

// TestIssuer_AdmitWindows: PerWindow requests per ID per Window, then *Throttled until the
// window ends; a new window admits again.
func TestIssuer_AdmitWindows(t *testing.T) {
	t.Parallel()
	i := newIssuer(t, 1)
	now := time.Unix(1_800_000_000, 0)
	for n := range PerWindow {
		if err := i.Admit("dev-a", now); err != nil {
			t.Fatalf("request %d: %v", n+1, err)
		}
	}
	err := i.Admit("dev-a", now.Add(10*time.Second))
	th, ok := errors.AsType[*Throttled](err)
	if !ok || th.RetryAfter != Window-10*time.Second || th.RetryAfterSeconds() != 50 {
		t.Fatalf("request %d = %v; want Throttled for the rest of the window", PerWindow+1, err)
	}
	if err := i.Admit("dev-b", now); err != nil {
		t.Errorf("another device: %v", err)
	}
	if err := i.Admit("dev-a", now.Add(Window)); err != nil {
		t.Errorf("the next window: %v", err)
	}
}
