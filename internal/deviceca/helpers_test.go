package deviceca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/identity"
)

// t0 is the time the test PKI is made at; everything is valid at t0 plus an hour.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	tenantA = "tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f"
	tenantB = "tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e80"
	caIDA   = "dca_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f"
	caIDB   = "dca_0193f1c2a4b57d0e9c1f2a3b4c5d6e80"

	rootValidity = 10 * 365 * 24 * time.Hour
	caValidity   = 365 * 24 * time.Hour
	certValidity = 24 * time.Hour
)

// platform is a root key and certificate.
type platform struct {
	key     *ecdsa.PrivateKey
	rootPEM []byte
	root    *x509.Certificate
}

func newPlatform(t testing.TB) *platform {
	t.Helper()
	key := newKey(t)
	rootPEM, err := deviceca.NewRootCertificate(key, "moat test root", t0, rootValidity)
	if err != nil {
		t.Fatalf("NewRootCertificate = %v", err)
	}
	root, err := deviceca.ParseRootCertificate(rootPEM)
	if err != nil {
		t.Fatalf("ParseRootCertificate = %v", err)
	}
	return &platform{key: key, rootPEM: rootPEM, root: root}
}

// tenantCA is a tenant CA accepted by CheckCA.
type tenantCA struct {
	key     *ecdsa.PrivateKey
	csr     deviceca.CSRInfo
	csrPEM  []byte
	certPEM []byte
	cert    *x509.Certificate
}

func (p *platform) newCA(t testing.TB, tenantID, caID string) *tenantCA {
	t.Helper()
	key, err := deviceca.NewCAKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := newCSR(t, key, tenantID, caID)
	csr, err := deviceca.ParseCSR(csrPEM)
	if err != nil {
		t.Fatalf("ParseCSR = %v", err)
	}
	certPEM, err := deviceca.SignCA(p.root, p.key, csrPEM, t0, caValidity)
	if err != nil {
		t.Fatalf("SignCA = %v", err)
	}
	cert, err := deviceca.CheckCA(p.root, certPEM, csr, t0)
	if err != nil {
		t.Fatalf("CheckCA = %v", err)
	}
	return &tenantCA{key: key, csr: csr, csrPEM: csrPEM, certPEM: certPEM, cert: cert}
}

func newCSR(t testing.TB, key *ecdsa.PrivateKey, tenantID, caID string) []byte {
	t.Helper()
	csrPEM, err := deviceca.NewCSR(key, tenantID, caID)
	if err != nil {
		t.Fatalf("NewCSR = %v", err)
	}
	return csrPEM
}

// device is a device identity key and its ID.
type device struct {
	key *ecdsa.PrivateKey
	id  string
}

func newDevice(t testing.TB) device {
	t.Helper()
	key := newKey(t)
	return device{key: key, id: string(identity.IDFromPublicKey(&key.PublicKey))}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// request is a valid request for d from ca: valid from t0 for a day.
func (ca *tenantCA) request(d device) deviceca.IssueRequest {
	return deviceca.IssueRequest{
		DevicePublicKey: &d.key.PublicKey,
		TenantID:        ca.csr.TenantID,
		DeviceID:        d.id,
		NotBefore:       t0,
		NotAfter:        t0.Add(certValidity),
	}
}

func (ca *tenantCA) issue(t testing.TB, d device) *x509.Certificate {
	t.Helper()
	der, _, err := deviceca.Issue(ca.cert, ca.key, ca.request(d))
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	return parseDER(t, der)
}

// leafTemplate is the template Issue uses for d in tenant tenantID, for crafting
// certificates Issue would refuse to make.
func leafTemplate(tenantID, deviceID string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               subject(deviceID, "tenant "+tenantID),
		URIs:                  []*url.URL{mustURL("urn:moat:tenant:" + tenantID + ":device:" + deviceID)},
		NotBefore:             t0,
		NotAfter:              t0.Add(certValidity),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// craft signs tmpl for pub with ca's key, bypassing Issue.
func (ca *tenantCA) craft(t testing.TB, tmpl *x509.Certificate, pub *ecdsa.PublicKey) *x509.Certificate {
	t.Helper()
	return craft(t, tmpl, ca.cert, pub, ca.key)
}

func craft(t testing.TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("CreateCertificate = %v", err)
	}
	return parseDER(t, der)
}

func parseDER(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate = %v", err)
	}
	return cert
}

func subject(cn, o string) pkix.Name {
	return pkix.Name{CommonName: cn, Organization: []string{o}}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func certPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// wantErr fails t unless err wraps want (or is nil when want is nil).
func wantErr(t testing.TB, call string, err, want error) {
	t.Helper()
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Errorf("%s = %v, want %v", call, err, want)
	}
}
