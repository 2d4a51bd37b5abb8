package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestPublic_RoundTrip(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	path := filepath.Join(t.TempDir(), "key.pub")
	if err := WritePublic(path, &key.PublicKey); err != nil {
		t.Fatalf("WritePublic = %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm() != 0o644 {
		t.Errorf("public key mode = %04o, want 0644", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	want, err := EncodePublicPEM(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, want) {
		t.Errorf("public key file = %q, want EncodePublicPEM's %q", data, want)
	}
	pub, err := ReadPublic(path)
	if err != nil || !pub.Equal(&key.PublicKey) {
		t.Errorf("ReadPublic = %v, %v; want the written key", pub, err)
	}
	// A public key is not secret: a world-readable one is fine, and Inspect asks no passphrase.
	info, err := Inspect(path, noPassphrase(t))
	if err != nil || info.Private || info.Encrypted || !info.Public.Equal(&key.PublicKey) {
		t.Errorf("Inspect(public) = %+v, %v; want the public key", info, err)
	}
	// OpenSSL-style parsing agrees.
	b, _ := pem.Decode(data)
	if k, err := x509.ParsePKIXPublicKey(b.Bytes); err != nil || !key.PublicKey.Equal(k) {
		t.Errorf("x509.ParsePKIXPublicKey(file) = %v, %v", k, err)
	}
}

func pubPEM(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestParsePublicPEM_RejectsOtherKeyTypes(t *testing.T) {
	t.Parallel()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	key := newKey(t)
	good := pubPEM(t, &key.PublicKey)
	der := func() []byte { b, _ := pem.Decode(good); return b.Bytes }
	priv, _ := encodePrivatePEM(key, nil, testKDF)
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"rsa", pubPEM(t, &rsaKey.PublicKey), ErrUnsupportedKey},
		{"ed25519", pubPEM(t, edPub), ErrUnsupportedKey},
		{"p384", pubPEM(t, &p384.PublicKey), ErrUnsupportedKey},
		{"private_key", priv, ErrMalformed},
		{"rsa_pkcs1", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}), ErrMalformed},
		{"two_blocks", append(bytes.Clone(good), good...), ErrMalformed},
		{"text_before", append([]byte("key:\n"), good...), ErrMalformed},
		{"text_after", append(bytes.Clone(good), "x"...), ErrMalformed},
		{"headers", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{"A": "b"}, Bytes: der()}), ErrMalformed},
		{"trailing_der", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: append(der(), 0)}), ErrMalformed},
		{"point_off_curve", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: func() []byte { d := der(); d[len(d)-1] ^= 1; return d }()}), ErrMalformed},
		{"empty", nil, ErrMalformed},
		{"huge", bytes.Repeat([]byte(" "), maxFileBytes+1), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if pub, err := ParsePublicPEM(tt.data); !errors.Is(err, tt.want) || pub != nil {
				t.Errorf("ParsePublicPEM(%s) = %v, %v; want %v", tt.name, pub, err, tt.want)
			}
		})
	}
	if err := WritePublic(filepath.Join(t.TempDir(), "p384.pub"), &p384.PublicKey); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("WritePublic(P-384) = %v, want ErrUnsupportedKey", err)
	}
	// Trailing white space, CRLF line endings and leading blank lines are fine.
	crlf := bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n"))
	for _, ok := range [][]byte{append([]byte("\n\n"), good...), append(bytes.Clone(good), "\n\n"...), crlf} {
		if pub, err := ParsePublicPEM(ok); err != nil || !pub.Equal(&key.PublicKey) {
			t.Errorf("ParsePublicPEM(%q) = %v, %v; want the key", ok, pub, err)
		}
	}
}

// TestInspect_NotAKey: a file that is no key at all is called malformed, not an exposed
// private key, whatever its mode.
func TestInspect_NotAKey(t *testing.T) {
	t.Parallel()
	for _, content := range []string{"notes\n", "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n", ""} {
		path := filepath.Join(t.TempDir(), "notes.txt")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Inspect(path, noPassphrase(t)); !errors.Is(err, ErrMalformed) || errors.Is(err, ErrExposed) {
			t.Errorf("Inspect(%q) = %v, want ErrMalformed", content, err)
		}
	}
}
