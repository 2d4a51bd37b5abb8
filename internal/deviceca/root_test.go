package deviceca_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
)

func TestNewRootCertificate_Shape(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	r := p.root
	if !r.IsCA || !r.BasicConstraintsValid || r.MaxPathLen != 1 || r.MaxPathLenZero {
		t.Errorf("root IsCA %v, BasicConstraintsValid %v, MaxPathLen %d, MaxPathLenZero %v; want true, true, 1, false",
			r.IsCA, r.BasicConstraintsValid, r.MaxPathLen, r.MaxPathLenZero)
	}
	if r.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("root KeyUsage = %b, want CertSign|CRLSign", r.KeyUsage)
	}
	if r.Subject.CommonName != "moat test root" || len(r.Subject.Organization) != 1 || r.Subject.Organization[0] != "moat platform" {
		t.Errorf("root subject = %s, want CN=moat test root, O=moat platform", r.Subject)
	}
	if len(r.SubjectKeyId) == 0 {
		t.Error("root has no SubjectKeyId")
	}
	checkSerial(t, r.SerialNumber)
	if !r.NotBefore.Equal(t0.Add(-5*time.Minute)) || !r.NotAfter.Equal(t0.Add(rootValidity)) {
		t.Errorf("root valid %v to %v, want %v to %v", r.NotBefore, r.NotAfter, t0.Add(-5*time.Minute), t0.Add(rootValidity))
	}
	if !p.key.PublicKey.Equal(r.PublicKey) {
		t.Error("root does not carry the root key")
	}
}

// checkSerial fails t unless s is a positive serial of at most 128 bits.
func checkSerial(t *testing.T, s *big.Int) {
	t.Helper()
	if s.Sign() <= 0 || s.BitLen() > 128 {
		t.Errorf("serial %v: want positive, at most 128 bits", s)
	}
}

func TestNewRootCertificate_RejectsBadInput(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		signer   crypto.Signer
		rootName string
		now      time.Time
		validity time.Duration
	}{
		{"no-signer", nil, "root", t0, time.Hour},
		{"p384-signer", p384, "root", t0, time.Hour},
		{"empty-name", key, "", t0, time.Hour},
		{"long-name", key, string(bytes.Repeat([]byte("x"), 65)), t0, time.Hour},
		{"control-in-name", key, "root\n", t0, time.Hour},
		{"zero-now", key, "root", time.Time{}, time.Hour},
		{"zero-validity", key, "root", t0, 0},
		{"negative-validity", key, "root", t0, -time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := deviceca.NewRootCertificate(tt.signer, tt.rootName, tt.now, tt.validity)
			wantErr(t, "NewRootCertificate", err, deviceca.ErrInvalidInput)
			if got != nil {
				t.Errorf("NewRootCertificate returned a certificate with error %v", err)
			}
		})
	}
}

func TestParseRootCertificate_Rejects(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	d := newDevice(t)
	leaf := ca.issue(t, d)

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: subject("root", "moat platform"),
		NotBefore: t0, NotAfter: t0.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	p384Root := craftSelfSigned(t, rootTmpl, p384)
	notCA := *rootTmpl
	notCA.IsCA = false
	notCA.KeyUsage = x509.KeyUsageDigitalSignature
	leafSelf := craftSelfSigned(t, &notCA, p.key)

	badSig := bytes.Clone(p.root.Raw)
	badSig[len(badSig)-3] ^= 1 // inside the ECDSA signature's s

	tests := []struct {
		name string
		data []byte
	}{
		{"tenant-ca", ca.certPEM},
		{"device", certPEM(leaf)},
		{"p384-root", certPEM(p384Root)},
		{"self-signed-not-ca", certPEM(leafSelf)},
		{"bad-signature", certPEM(&x509.Certificate{Raw: badSig})},
		{"two-blocks", append(bytes.Clone(p.rootPEM), p.rootPEM...)},
		{"trailing-data", append(bytes.Clone(p.rootPEM), "x"...)},
		{"csr", ca.csrPEM},
		{"der", p.root.Raw},
		{"empty", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := deviceca.ParseRootCertificate(tt.data)
			wantErr(t, "ParseRootCertificate", err, deviceca.ErrBadCertificate)
			if got != nil {
				t.Errorf("ParseRootCertificate returned a certificate with error %v", err)
			}
		})
	}
}

func craftSelfSigned(t *testing.T, tmpl *x509.Certificate, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return parseDER(t, der)
}
