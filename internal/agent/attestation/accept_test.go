package attestation_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent/attestation"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/keys"
)

var acceptNow = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// offlineClient is a Client for a fresh identity that never reaches a server.
func offlineClient(tb testing.TB) (*attestation.Client, *identity.FileKey) {
	tb.Helper()
	key, err := identity.CreateFileKey(filepath.Join(tb.TempDir(), "identity.key"))
	if err != nil {
		tb.Fatal(err)
	}
	c, err := attestation.New(attestation.Config{
		ServerURL: "https://moat.invalid", ServerCAs: x509.NewCertPool(), Identity: key,
		StateDir: filepath.Join(tb.TempDir(), "state"), Now: time.Now,
		Measure: func(context.Context) ([]attest.Measurement, bool, error) { return nil, false, nil },
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c, key
}

// certPEM makes a certificate for pub signed by signer (as parent), valid until notAfter.
func certPEM(tb testing.TB, pub crypto.PublicKey, parent *x509.Certificate, signer crypto.Signer, notAfter time.Time, isCA bool) ([]byte, *x509.Certificate) {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "test"},
		NotBefore: acceptNow.Add(-time.Hour), NotAfter: notAfter,
		IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), c
}

// TestAccept_RejectsBadChains: an issued chain is used only if it is certificates only,
// for this device's key, signed by the next certificate and unexpired.
func TestAccept_RejectsBadChains(t *testing.T) {
	t.Parallel()
	c, key := offlineClient(t)
	caKey, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	caPEM, ca := certPEM(t, &caKey.PublicKey, nil, caKey, acceptNow.Add(48*time.Hour), true)
	leafPEM, _ := certPEM(t, key.Public(), ca, caKey, acceptNow.Add(24*time.Hour), false)
	good := append(append([]byte{}, leafPEM...), caPEM...)
	out, err := attestation.Accept(c, good, acceptNow)
	if err != nil || !bytes.Equal(out, good) {
		t.Fatalf("Accept(leaf, CA) = %q, %v; want the chain as is", out, err)
	}

	otherKey, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	otherLeaf, _ := certPEM(t, &otherKey.PublicKey, ca, caKey, acceptNow.Add(24*time.Hour), false)
	_, otherCA := certPEM(t, &otherKey.PublicKey, nil, otherKey, acceptNow.Add(48*time.Hour), true)
	wrongIssuer, _ := certPEM(t, key.Public(), otherCA, otherKey, acceptNow.Add(24*time.Hour), false)
	expired, _ := certPEM(t, key.Public(), ca, caKey, acceptNow.Add(-time.Second), false)
	keyBlock := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})
	for _, tc := range []struct {
		name  string
		chain []byte
	}{
		{"empty", nil},
		{"not PEM", []byte("hello")},
		{"text before", append([]byte("hello\n"), good...)},
		{"text after", append(append([]byte{}, good...), "hello"...)},
		{"other block type", append(append([]byte{}, leafPEM...), keyBlock...)},
		{"another device's key", append(append([]byte{}, otherLeaf...), caPEM...)},
		{"not signed by the next", append(append([]byte{}, wrongIssuer...), caPEM...)},
		{"expired", append(append([]byte{}, expired...), caPEM...)},
		{"nine certificates", bytes.Repeat(leafPEM, 9)},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")})},
	} {
		if out, err := attestation.Accept(c, tc.chain, acceptNow); err == nil {
			t.Errorf("%s: Accept = %q, want an error", tc.name, out)
		}
	}
}

// FuzzAccept: no input panics the chain check, and an accepted chain re-encodes stably.
func FuzzAccept(f *testing.F) {
	c, key := offlineClient(f)
	caKey, err := keys.Generate()
	if err != nil {
		f.Fatal(err)
	}
	caPEM, ca := certPEM(f, &caKey.PublicKey, nil, caKey, acceptNow.Add(48*time.Hour), true)
	leafPEM, _ := certPEM(f, key.Public(), ca, caKey, acceptNow.Add(24*time.Hour), false)
	f.Add(append(append([]byte{}, leafPEM...), caPEM...))
	f.Add(leafPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, chain []byte) {
		out, err := attestation.Accept(c, chain, acceptNow)
		if err != nil {
			return
		}
		again, err := attestation.Accept(c, out, acceptNow)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("re-accepting the stored chain = %q, %v; want it unchanged", again, err)
		}
	})
}
