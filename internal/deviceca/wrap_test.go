package deviceca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/moat-iot/moat/internal/deviceca"
)

const aadA = tenantA + "/" + caIDA

func newKEK(t *testing.T) []byte {
	t.Helper()
	kek := make([]byte, deviceca.KEKSize)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	return kek
}

func TestWrap_RoundTrip(t *testing.T) {
	t.Parallel()
	kek := newKEK(t)
	key := newKey(t)
	w1, err := deviceca.Wrap(kek, key, aadA)
	if err != nil {
		t.Fatalf("Wrap = %v", err)
	}
	w2, err := deviceca.Wrap(kek, key, aadA)
	if err != nil {
		t.Fatalf("Wrap = %v", err)
	}
	if bytes.Equal(w1, w2) {
		t.Error("two Wraps of one key are equal; want a fresh nonce each time")
	}
	scalar, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(w1, scalar) {
		t.Error("wrapped key contains the private scalar")
	}
	got, err := deviceca.Unwrap(kek, w1, aadA)
	if err != nil {
		t.Fatalf("Unwrap = %v", err)
	}
	if !got.Equal(key) {
		t.Error("Unwrap returned another key")
	}
}

// TestUnwrap_Rejects: a wrapped CA key opens only under its own KEK and binding, and not
// at all once modified, so a key moved to another tenant's or CA's row is useless.
func TestUnwrap_Rejects(t *testing.T) {
	t.Parallel()
	kek := newKEK(t)
	wrapped, err := deviceca.Wrap(kek, newKey(t), aadA)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		kek     []byte
		wrapped []byte
		aad     string
	}{
		{"wrong-aad-tenant", kek, wrapped, tenantB + "/" + caIDA},
		{"wrong-aad-ca", kek, wrapped, tenantA + "/" + caIDB},
		{"wrong-kek", newKEK(t), wrapped, aadA},
		{"truncated", kek, wrapped[:len(wrapped)-1], aadA},
		{"appended", kek, append(bytes.Clone(wrapped), 0), aadA},
		{"version-only", kek, wrapped[:1], aadA},
		{"empty", kek, nil, aadA},
		{"other-version", kek, append([]byte{2}, wrapped[1:]...), aadA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := deviceca.Unwrap(tt.kek, tt.wrapped, tt.aad)
			wantErr(t, "Unwrap", err, deviceca.ErrUnwrap)
			if got != nil {
				t.Error("Unwrap returned a key with an error")
			}
		})
	}
	t.Run("flipped-bits", func(t *testing.T) {
		t.Parallel()
		for i := range len(wrapped) * 8 {
			w := bytes.Clone(wrapped)
			w[i/8] ^= 1 << (i % 8)
			if _, err := deviceca.Unwrap(kek, w, aadA); err == nil {
				t.Fatalf("Unwrap with bit %d flipped = nil, want %v", i, deviceca.ErrUnwrap)
			} else {
				wantErr(t, "Unwrap", err, deviceca.ErrUnwrap)
			}
		}
	})
}

func TestWrap_RejectsBadInput(t *testing.T) {
	t.Parallel()
	kek := newKEK(t)
	key := newKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		kek  []byte
		key  *ecdsa.PrivateKey
		aad  string
	}{
		{"short-kek", kek[:16], key, aadA},
		{"long-kek", append(bytes.Clone(kek), 0), key, aadA},
		{"no-aad", kek, key, ""},
		{"no-key", kek, nil, aadA},
		{"p384-key", kek, p384, aadA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := deviceca.Wrap(tt.kek, tt.key, tt.aad)
			wantErr(t, "Wrap", err, deviceca.ErrInvalidInput)
		})
	}
	wrapped, err := deviceca.Wrap(kek, key, aadA)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]byte{kek[:16], nil} {
		_, err := deviceca.Unwrap(k, wrapped, aadA)
		wantErr(t, "Unwrap(bad KEK size)", err, deviceca.ErrInvalidInput)
	}
	_, err = deviceca.Unwrap(kek, wrapped, "")
	wantErr(t, "Unwrap(no aad)", err, deviceca.ErrInvalidInput)
}
