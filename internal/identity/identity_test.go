package identity_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/identity"
)

func fixedKey(tb testing.TB, fill byte) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// TestIDFromPublicKey_Pinned: the ID of a fixed key never changes (devices and the
// registry must agree on it forever).
func TestIDFromPublicKey_Pinned(t *testing.T) {
	t.Parallel()
	const want = "76805a63a6980c18075424a13f32772d02d7c71b4965754c1ce84f5841220327"
	got := identity.IDFromPublicKey(&fixedKey(t, 0x11).PublicKey)
	if got != want {
		t.Errorf("IDFromPublicKey(fixed key 0x11...) = %q, want %q", got, want)
	}
	if !identity.ValidID(string(got)) {
		t.Errorf("ValidID(%q) = false", got)
	}
	if other := identity.IDFromPublicKey(&fixedKey(t, 0x22).PublicKey); other == got {
		t.Errorf("two keys have the same ID %q", got)
	}
}

// TestIDFromPublicKey_SameAsX509: the ID is the SHA-256 of what x509.MarshalPKIXPublicKey
// encodes, for many keys (points with leading zero bytes among them), and "" for a point
// that is not on the curve.
func TestIDFromPublicKey_SameAsX509(t *testing.T) {
	for range 200 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(der)
		if got, want := identity.IDFromPublicKey(&k.PublicKey), hex.EncodeToString(sum[:]); string(got) != want {
			t.Fatalf("IDFromPublicKey = %s, want %s (x509)", got, want)
		}
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	off := k.PublicKey
	off.Y = new(big.Int).Add(off.Y, big.NewInt(1)) //nolint:staticcheck // SA1019: a point off the curve is what this test needs, and only the raw coordinates make one
	if id := identity.IDFromPublicKey(&off); id != "" {
		t.Errorf("IDFromPublicKey(point off the curve) = %s, want \"\"", id)
	}
}

func TestIDFromPublicKey_RefusesOtherCurves(t *testing.T) {
	t.Parallel()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if id := identity.IDFromPublicKey(&k.PublicKey); id != "" {
		t.Errorf("IDFromPublicKey(P-384) = %q, want empty", id)
	}
	if id := identity.IDFromPublicKey(nil); id != "" {
		t.Errorf("IDFromPublicKey(nil) = %q, want empty", id)
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{strings.Repeat("0a", 32), true},
		{strings.Repeat("0A", 32), false},
		{strings.Repeat("0a", 31), false},
		{strings.Repeat("0a", 33), false},
		{strings.Repeat("0g", 32), false},
		{"", false},
		{"dev_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f", false},
	} {
		if got := identity.ValidID(tc.s); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}

func TestFileKey_RoundTrip(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "identity.pem")
	k, err := identity.CreateFileKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(ents) != 1 {
		t.Errorf("directory holds %d entries (%v), want only the key file", len(ents), err)
	}
	o, err := identity.OpenFileKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Public().Equal(k.Public()) || o.ID() != k.ID() || !identity.ValidID(string(o.ID())) {
		t.Fatalf("reopened key differs: %s vs %s", o.ID(), k.ID())
	}
	if k.ID() != identity.IDFromPublicKey(k.Public()) {
		t.Errorf("ID() = %s, IDFromPublicKey = %s", k.ID(), identity.IDFromPublicKey(k.Public()))
	}
	sum := sha256.Sum256([]byte("evidence"))
	sig, err := o.Sign(sum[:])
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public(), sum[:], sig) {
		t.Error("signature by the reopened key does not verify with the created key")
	}
	if _, err := o.Sign([]byte("not a digest")); err == nil {
		t.Error("Sign accepted a digest that is not 32 bytes")
	}
}

func TestCreateFileKey_NeverOverwrites(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "identity.pem")
	first, err := identity.CreateFileKey(path)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := identity.CreateFileKey(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second CreateFileKey = %v, want %v", err, fs.ErrExist)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("second CreateFileKey changed the key file")
	}
	o, err := identity.OpenFileKey(path)
	if err != nil || o.ID() != first.ID() {
		t.Errorf("OpenFileKey after second create = %v, %v; want the first key", o, err)
	}
}

func TestOpenFileKey_RefusesGroupOrWorldAccess(t *testing.T) {
	t.Parallel()
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o602} {
		path := filepath.Join(t.TempDir(), "identity.pem")
		if _, err := identity.CreateFileKey(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := identity.OpenFileKey(path); !errors.Is(err, identity.ErrInsecureKeyFile) {
			t.Errorf("OpenFileKey(mode %04o) = %v, want %v", mode, err, identity.ErrInsecureKeyFile)
		}
	}
}

func writeKey(t *testing.T, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "identity.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenFileKey_RefusesP384(t *testing.T) {
	t.Parallel()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := identity.OpenFileKey(writeKey(t, k)); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("OpenFileKey(P-384 key) = %v, want a P-256 error", err)
	}
}

func TestOpenFileKey_RefusesGarbage(t *testing.T) {
	t.Parallel()
	good := writeKey(t, fixedKey(t, 0x11))
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"empty":          nil,
		"not pem":        []byte("hello"),
		"trailing data":  append(bytes.Clone(data), "junk"...),
		"wrong pem type": bytes.Replace(data, []byte("PRIVATE KEY"), []byte("PUBLIC KEY"), 2),
	} {
		path := filepath.Join(t.TempDir(), "identity.pem")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := identity.OpenFileKey(path); err == nil {
			t.Errorf("OpenFileKey(%s) accepted", name)
		}
	}
	if _, err := identity.OpenFileKey(filepath.Join(t.TempDir(), "missing.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFileKey(missing) = %v, want %v", err, fs.ErrNotExist)
	}
	if k, err := identity.OpenFileKey(good); err != nil || k.ID() != identity.IDFromPublicKey(&fixedKey(t, 0x11).PublicKey) {
		t.Errorf("OpenFileKey(good) = %v", err)
	}
}
