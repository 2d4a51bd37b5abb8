package deviceca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
)

func TestParseCSR_RoundTrip(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	got, err := deviceca.ParseCSR(newCSR(t, key, tenantA, caIDA))
	if err != nil {
		t.Fatalf("ParseCSR = %v", err)
	}
	if got.TenantID != tenantA || got.CAID != caIDA || !key.PublicKey.Equal(got.PublicKey) {
		t.Errorf("ParseCSR = %s %s, want %s %s and the key", got.TenantID, got.CAID, tenantA, caIDA)
	}
}

func TestNewCSR_RejectsBadInput(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		key            *ecdsa.PrivateKey
		tenantID, caID string
	}{
		{"no-key", nil, tenantA, caIDA},
		{"p384-key", p384, tenantA, caIDA},
		{"empty-tenant", key, "", caIDA},
		{"empty-ca", key, tenantA, ""},
		{"upper-case", key, "TNT_1", caIDA},
		{"colon", key, "tnt:1", caIDA},
		{"space", key, tenantA, "dca 1"},
		{"too-long", key, strings.Repeat("a", 49), caIDA},
		{"non-ascii", key, tenantA, "dcä"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := deviceca.NewCSR(tt.key, tt.tenantID, tt.caID)
			wantErr(t, "NewCSR", err, deviceca.ErrInvalidInput)
		})
	}
}

func TestParseCSR_Rejects(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	valid := newCSR(t, key, tenantA, caIDA)
	block, _ := pem.Decode(valid)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	craftCSR := func(name pkix.Name, signer any) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: name}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	caName := subject("moat device CA "+caIDA, "tenant "+tenantA)
	withOU := caName
	withOU.OrganizationalUnit = []string{"x"}
	twoOrgs := caName
	twoOrgs.Organization = []string{"tenant " + tenantA, "tenant " + tenantB}
	tampered := bytes.Replace(block.Bytes, []byte(tenantA), []byte(tenantB), 1)

	tests := []struct {
		name string
		data []byte
	}{
		{"tampered-subject", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})},
		{"p384-key", craftCSR(caName, p384)},
		{"cn-without-prefix", craftCSR(subject(caIDA, "tenant "+tenantA), key)},
		{"o-without-prefix", craftCSR(subject("moat device CA "+caIDA, tenantA), key)},
		{"bad-ca-id", craftCSR(subject("moat device CA CA:1", "tenant "+tenantA), key)},
		{"bad-tenant-id", craftCSR(subject("moat device CA "+caIDA, "tenant T 1"), key)},
		{"extra-ou", craftCSR(withOU, key)},
		{"two-orgs", craftCSR(twoOrgs, key)},
		{"no-subject", craftCSR(pkix.Name{}, key)},
		{"certificate-block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})},
		{"trailing-data", append(bytes.Clone(valid), valid...)},
		{"der", block.Bytes},
		{"empty", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := deviceca.ParseCSR(tt.data)
			wantErr(t, "ParseCSR", err, deviceca.ErrBadCSR)
			if got != (deviceca.CSRInfo{}) {
				t.Errorf("ParseCSR returned %+v with error %v", got, err)
			}
		})
	}
}

func TestSignCA_Shape(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA).cert
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("CA IsCA %v, BasicConstraintsValid %v, MaxPathLen %d, MaxPathLenZero %v; want true, true, 0, true",
			ca.IsCA, ca.BasicConstraintsValid, ca.MaxPathLen, ca.MaxPathLenZero)
	}
	if ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA KeyUsage = %b, want CertSign|CRLSign", ca.KeyUsage)
	}
	if want := "CN=moat device CA " + caIDA + ",O=tenant " + tenantA; ca.Subject.String() != want {
		t.Errorf("CA subject = %s, want %s", ca.Subject, want)
	}
	if len(ca.SubjectKeyId) == 0 || !bytes.Equal(ca.AuthorityKeyId, p.root.SubjectKeyId) {
		t.Errorf("CA SubjectKeyId %x, AuthorityKeyId %x; want set, root's %x", ca.SubjectKeyId, ca.AuthorityKeyId, p.root.SubjectKeyId)
	}
	checkSerial(t, ca.SerialNumber)
	if !ca.NotBefore.Equal(t0.Add(-5*time.Minute)) || !ca.NotAfter.Equal(t0.Add(caValidity)) {
		t.Errorf("CA valid %v to %v, want %v to %v", ca.NotBefore, ca.NotAfter, t0.Add(-5*time.Minute), t0.Add(caValidity))
	}
}

func TestSignCA_Refuses(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	csrPEM := newCSR(t, newKey(t), tenantA, caIDA)
	tests := []struct {
		name     string
		signer   *ecdsa.PrivateKey
		csr      []byte
		validity time.Duration
		want     error
	}{
		{"other-root-key", newKey(t), csrPEM, caValidity, deviceca.ErrWrongKey},
		{"past-the-root", p.key, csrPEM, rootValidity + time.Second, deviceca.ErrInvalidInput},
		{"zero-validity", p.key, csrPEM, 0, deviceca.ErrInvalidInput},
		{"bad-csr", p.key, csrPEM[:len(csrPEM)/2], caValidity, deviceca.ErrBadCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := deviceca.SignCA(p.root, tt.signer, tt.csr, t0, tt.validity)
			wantErr(t, "SignCA", err, tt.want)
			if got != nil {
				t.Errorf("SignCA returned a certificate with error %v", err)
			}
		})
	}
}

// TestCheckCA_Rejects: the server accepts an uploaded tenant CA certificate only if the
// platform root signed it, for exactly the key and subject of the tenant's CSR, as a CA
// that signs leaves only, valid now.
func TestCheckCA_Rejects(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	key := newKey(t)
	csrPEM := newCSR(t, key, tenantA, caIDA)
	csr, err := deviceca.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(p *platform, csrPEM []byte) []byte {
		out, err := deviceca.SignCA(p.root, p.key, csrPEM, t0, caValidity)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	good := sign(p, csrPEM)
	caTmpl := func() *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(2), Subject: subject("moat device CA "+caIDA, "tenant "+tenantA),
			NotBefore: t0, NotAfter: t0.Add(caValidity), BasicConstraintsValid: true, IsCA: true,
			MaxPathLen: 0, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
		}
	}
	notCA := caTmpl()
	notCA.IsCA, notCA.MaxPathLenZero, notCA.KeyUsage = false, false, x509.KeyUsageDigitalSignature
	pathLen1 := caTmpl()
	pathLen1.MaxPathLen, pathLen1.MaxPathLenZero = 1, false
	noCertSign := caTmpl()
	noCertSign.KeyUsage = x509.KeyUsageCRLSign
	serverOnly := caTmpl()
	serverOnly.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	craftPEM := func(tmpl *x509.Certificate) []byte {
		return certPEM(craft(t, tmpl, p.root, &key.PublicKey, p.key))
	}

	tests := []struct {
		name string
		cert []byte
		now  time.Time
		want error
	}{
		{"valid", good, t0, nil},
		{"other-root", sign(newPlatform(t), csrPEM), t0, deviceca.ErrUntrusted},
		{"other-key", sign(p, newCSR(t, newKey(t), tenantA, caIDA)), t0, deviceca.ErrWrongKey},
		{"other-tenant", sign(p, newCSR(t, key, tenantB, caIDA)), t0, deviceca.ErrWrongTenant},
		{"other-ca-id", sign(p, newCSR(t, key, tenantA, caIDB)), t0, deviceca.ErrBadCertificate},
		{"not-ca", craftPEM(notCA), t0, deviceca.ErrBadCertificate},
		{"path-len-1", craftPEM(pathLen1), t0, deviceca.ErrBadCertificate},
		{"no-cert-sign", craftPEM(noCertSign), t0, deviceca.ErrBadCertificate},
		{"server-auth-only", craftPEM(serverOnly), t0, deviceca.ErrBadCertificate},
		{"the-root", p.rootPEM, t0, deviceca.ErrUntrusted},
		{"expired", good, t0.Add(caValidity + time.Second), deviceca.ErrExpired},
		{"not-yet-valid", good, t0.Add(-time.Hour), deviceca.ErrExpired},
		{"garbage", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), t0, deviceca.ErrBadCertificate},
		{"csr", csrPEM, t0, deviceca.ErrBadCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := deviceca.CheckCA(p.root, tt.cert, csr, tt.now)
			wantErr(t, "CheckCA", err, tt.want)
			if (got == nil) != (err != nil) {
				t.Errorf("CheckCA = %v, %v: want a certificate exactly when no error", got, err)
			}
		})
	}
}

func TestCheckCA_RejectsIncompleteCSRInfo(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	noKey := ca.csr
	noKey.PublicKey = nil
	noTenant := ca.csr
	noTenant.TenantID = ""
	for _, csr := range []deviceca.CSRInfo{noKey, noTenant, {}} {
		_, err := deviceca.CheckCA(p.root, ca.certPEM, csr, t0)
		wantErr(t, "CheckCA(incomplete CSRInfo)", err, deviceca.ErrInvalidInput)
	}
}
