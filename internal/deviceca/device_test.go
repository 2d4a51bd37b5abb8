package deviceca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
)

// TestRoundTrip: root, tenant CA and device certificate made by this package verify.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	other := p.newCA(t, tenantB, caIDB)
	d := newDevice(t)
	leaf := ca.issue(t, d)
	tenant, id, by, err := deviceca.VerifyDevice(leaf, []*x509.Certificate{other.cert, ca.cert}, p.root, t0.Add(time.Hour))
	if err != nil {
		t.Fatalf("VerifyDevice = %v", err)
	}
	if tenant != tenantA || id != d.id || !by.Equal(ca.cert) {
		t.Errorf("VerifyDevice = %s, %s, %s; want %s, %s, %s", tenant, id, by.Subject, tenantA, d.id, ca.cert.Subject)
	}
}

func TestIssue_Shape(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	d := newDevice(t)
	der, serial, err := deviceca.Issue(ca.cert, ca.key, ca.request(d))
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	c := parseDER(t, der)
	if c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("device IsCA %v, BasicConstraintsValid %v; want false, true", c.IsCA, c.BasicConstraintsValid)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature || len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("device KeyUsage %b, ExtKeyUsage %v; want DigitalSignature, [ClientAuth]", c.KeyUsage, c.ExtKeyUsage)
	}
	if want := "CN=" + d.id + ",O=tenant " + tenantA; c.Subject.String() != want {
		t.Errorf("device subject = %s, want %s", c.Subject, want)
	}
	wantURI := "urn:moat:tenant:" + tenantA + ":device:" + d.id
	if len(c.URIs) != 1 || c.URIs[0].String() != wantURI || len(c.DNSNames)+len(c.EmailAddresses)+len(c.IPAddresses) != 0 {
		t.Errorf("device SANs URIs %v DNS %v email %v IP %v; want only %s", c.URIs, c.DNSNames, c.EmailAddresses, c.IPAddresses, wantURI)
	}
	if !bytes.Equal(c.AuthorityKeyId, ca.cert.SubjectKeyId) {
		t.Errorf("device AuthorityKeyId %x, want the CA's %x", c.AuthorityKeyId, ca.cert.SubjectKeyId)
	}
	checkSerial(t, c.SerialNumber)
	if want := c.SerialNumber.Text(16); serial != want || serial != strings.ToLower(serial) {
		t.Errorf("Issue serial = %s, want %s", serial, want)
	}
	if !c.NotBefore.Equal(t0) || !c.NotAfter.Equal(t0.Add(certValidity)) {
		t.Errorf("device valid %v to %v, want %v to %v", c.NotBefore, c.NotAfter, t0, t0.Add(certValidity))
	}
	if !d.key.PublicKey.Equal(c.PublicKey) {
		t.Error("device certificate does not carry the device key")
	}
}

// TestIssue_RefusesMismatchedDeviceID: the CA never certifies a key under another
// device's ID (rule 1).
func TestIssue_RefusesMismatchedDeviceID(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	req := ca.request(newDevice(t))
	req.DeviceID = newDevice(t).id
	der, _, err := deviceca.Issue(ca.cert, ca.key, req)
	wantErr(t, "Issue(ID of another device)", err, deviceca.ErrWrongDevice)
	if der != nil {
		t.Error("Issue returned a certificate with an error")
	}
}

func TestIssue_Refuses(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	other := p.newCA(t, tenantB, caIDB)
	d := newDevice(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	with := func(change func(*deviceca.IssueRequest)) deviceca.IssueRequest {
		r := ca.request(d)
		change(&r)
		return r
	}
	tests := []struct {
		name  string
		ca    *x509.Certificate
		caKey *ecdsa.PrivateKey
		req   deviceca.IssueRequest
		want  error
	}{
		{"valid", ca.cert, ca.key, ca.request(d), nil},
		{"until-ca-end", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.NotAfter = ca.cert.NotAfter }), nil},
		{"other-tenant", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.TenantID = tenantB }), deviceca.ErrWrongTenant},
		{"bad-tenant-id", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.TenantID = "T" }), deviceca.ErrInvalidInput},
		{"after-ca-end", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.NotAfter = ca.cert.NotAfter.Add(time.Second) }), deviceca.ErrInvalidInput},
		{"empty-period", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.NotAfter = r.NotBefore }), deviceca.ErrInvalidInput},
		{"reversed-period", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.NotAfter = r.NotBefore.Add(-time.Hour) }), deviceca.ErrInvalidInput},
		{"no-not-before", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.NotBefore = time.Time{} }), deviceca.ErrInvalidInput},
		{"upper-case-id", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.DeviceID = strings.ToUpper(d.id) }), deviceca.ErrInvalidInput},
		{"no-key", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.DevicePublicKey = nil }), deviceca.ErrInvalidInput},
		{"p384-key", ca.cert, ca.key, with(func(r *deviceca.IssueRequest) { r.DevicePublicKey = &p384.PublicKey }), deviceca.ErrInvalidInput},
		{"other-ca-key", ca.cert, other.key, ca.request(d), deviceca.ErrWrongKey},
		{"root-as-ca", p.root, p.key, ca.request(d), deviceca.ErrBadCertificate},
		{"device-as-ca", ca.issue(t, newDevice(t)), ca.key, ca.request(d), deviceca.ErrBadCertificate},
		{"no-ca", nil, ca.key, ca.request(d), deviceca.ErrInvalidInput},
		{"no-ca-key", ca.cert, nil, ca.request(d), deviceca.ErrInvalidInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			der, _, err := deviceca.Issue(tt.ca, tt.caKey, tt.req) // a nil caKey is a typed nil
			wantErr(t, "Issue", err, tt.want)
			if (der == nil) != (err != nil) {
				t.Errorf("Issue = %d bytes, %v: want a certificate exactly when no error", len(der), err)
			}
		})
	}
}

// TestIssue_RefusesJoinsEveryProblem: a request with several problems reports each.
func TestIssue_RefusesJoinsEveryProblem(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	req := ca.request(newDevice(t))
	req.TenantID = tenantB
	req.DeviceID = newDevice(t).id
	req.NotAfter = req.NotBefore
	_, _, err := deviceca.Issue(ca.cert, ca.key, req)
	for _, want := range []error{deviceca.ErrWrongTenant, deviceca.ErrWrongDevice, deviceca.ErrInvalidInput} {
		wantErr(t, "Issue", err, want)
	}
}

// TestIssue_SerialsUniqueAndPositive issues 10000 certificates, concurrently, and checks
// that their serial numbers are positive, at most 128 bits, and all different.
func TestIssue_SerialsUniqueAndPositive(t *testing.T) {
	t.Parallel()
	const n = 10000
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	d := newDevice(t)
	req := ca.request(d)
	workers := runtime.GOMAXPROCS(0)
	serials := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				der, serial, err := deviceca.Issue(ca.cert, ca.key, req)
				if err != nil {
					t.Errorf("Issue = %v", err)
					return
				}
				c, err := x509.ParseCertificate(der)
				if err != nil || c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 || c.SerialNumber.Text(16) != serial {
					t.Errorf("certificate %d: serial %s, parse error %v: want positive, at most 128 bits", i, serial, err)
					return
				}
				serials[w] = append(serials[w], serial)
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool, n)
	for _, s := range serials {
		for _, serial := range s {
			if seen[serial] {
				t.Fatalf("serial %s issued twice", serial)
			}
			seen[serial] = true
		}
	}
	if len(seen) != n {
		t.Errorf("%d serials, want %d", len(seen), n)
	}
}

// TestVerifyDevice_RejectsCertOfTenantAAsTenantB: a device certificate from tenant A's CA
// does not verify where only tenant B's CA is trusted (rule 3).
func TestVerifyDevice_RejectsCertOfTenantAAsTenantB(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	a := p.newCA(t, tenantA, caIDA)
	b := p.newCA(t, tenantB, caIDB)
	leaf := a.issue(t, newDevice(t))
	_, _, _, err := deviceca.VerifyDevice(leaf, []*x509.Certificate{b.cert}, p.root, t0.Add(time.Hour))
	wantErr(t, "VerifyDevice(A's certificate, B's CA)", err, deviceca.ErrUntrusted)
}

// TestVerifyDevice_RejectsTenantClaimAcrossCAs: tenant A's CA key signs a certificate
// whose URI (and O) claim tenant B; it is refused even with both CAs trusted (rule 3).
func TestVerifyDevice_RejectsTenantClaimAcrossCAs(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	a := p.newCA(t, tenantA, caIDA)
	b := p.newCA(t, tenantB, caIDB)
	d := newDevice(t)
	leaf := a.craft(t, leafTemplate(tenantB, d.id), &d.key.PublicKey)
	_, _, _, err := deviceca.VerifyDevice(leaf, []*x509.Certificate{a.cert, b.cert}, p.root, t0.Add(time.Hour))
	wantErr(t, "VerifyDevice(A's CA claiming tenant B)", err, deviceca.ErrWrongTenant)
}

// TestVerifyDevice_RejectsURIOfAnotherDevice: a certificate names only the device whose
// key it carries, in exactly one well-formed URI that agrees with the subject.
func TestVerifyDevice_RejectsURIOfAnotherDevice(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	d, other := newDevice(t), newDevice(t)
	with := func(change func(*x509.Certificate)) *x509.Certificate {
		tmpl := leafTemplate(tenantA, d.id)
		change(tmpl)
		return ca.craft(t, tmpl, &d.key.PublicKey)
	}
	uri := func(s string) func(*x509.Certificate) {
		return func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(s)} }
	}
	prefix := "urn:moat:tenant:" + tenantA + ":device:"
	tests := []struct {
		name string
		cert *x509.Certificate
		want error
	}{
		{"valid", with(func(*x509.Certificate) {}), nil},
		{"uri-names-other", with(uri(prefix + other.id)), deviceca.ErrWrongDevice},
		{"uri-and-cn-name-other", ca.craft(t, leafTemplate(tenantA, other.id), &d.key.PublicKey), deviceca.ErrWrongDevice},
		{"cn-names-other", with(func(c *x509.Certificate) { c.Subject.CommonName = other.id }), deviceca.ErrWrongDevice},
		{"o-names-other-tenant", with(func(c *x509.Certificate) { c.Subject.Organization = []string{"tenant " + tenantB} }), deviceca.ErrWrongTenant},
		{"two-uris", with(func(c *x509.Certificate) { c.URIs = append(c.URIs, mustURL(prefix+other.id)) }), deviceca.ErrBadCertificate},
		{"same-uri-twice", with(func(c *x509.Certificate) { c.URIs = append(c.URIs, c.URIs[0]) }), deviceca.ErrBadCertificate},
		{"no-uri", with(func(c *x509.Certificate) { c.URIs = nil }), deviceca.ErrBadCertificate},
		{"dns-san", with(func(c *x509.Certificate) { c.DNSNames = []string{"example.com"} }), deviceca.ErrBadCertificate},
		{"ip-san", with(func(c *x509.Certificate) { c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)} }), deviceca.ErrBadCertificate},
		{"upper-case-id", with(uri(prefix + strings.ToUpper(d.id))), deviceca.ErrBadCertificate},
		{"spiffe", with(uri("spiffe://" + tenantA + "/device/" + d.id)), deviceca.ErrBadCertificate},
		{"extra-part", with(uri(prefix + d.id + ":x")), deviceca.ErrBadCertificate},
		{"query", with(uri(prefix + d.id + "?x=1")), deviceca.ErrBadCertificate},
		{"fragment", with(uri(prefix + d.id + "#x")), deviceca.ErrBadCertificate},
		{"other-nid", with(uri("urn:nomoat:tenant:" + tenantA + ":device:" + d.id)), deviceca.ErrBadCertificate},
		{"extra-ou", with(func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"x"} }), deviceca.ErrBadCertificate},
		{"ca-flag", with(func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign }), deviceca.ErrBadCertificate},
	}
	intermediates := []*x509.Certificate{ca.cert}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tenant, id, by, err := deviceca.VerifyDevice(tt.cert, intermediates, p.root, t0.Add(time.Hour))
			wantErr(t, "VerifyDevice", err, tt.want)
			if err != nil && (tenant != "" || id != "" || by != nil) {
				t.Errorf("VerifyDevice = %q, %q, %v with error %v", tenant, id, by, err)
			}
			_, _, perr := deviceca.ParseDeviceURI(tt.cert)
			wantErr(t, "ParseDeviceURI", perr, tt.want)
		})
	}
}

func TestVerifyDevice_RejectsExpired(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	leaf := ca.issue(t, newDevice(t))
	for _, now := range []time.Time{
		t0.Add(certValidity + time.Second), // expired
		t0.Add(-time.Second),               // not yet valid
		t0.Add(caValidity + time.Hour),     // the CA expired too
	} {
		_, _, _, err := deviceca.VerifyDevice(leaf, []*x509.Certificate{ca.cert}, p.root, now)
		wantErr(t, "VerifyDevice at "+now.String(), err, deviceca.ErrExpired)
	}
	if _, _, _, err := deviceca.VerifyDevice(leaf, []*x509.Certificate{ca.cert}, p.root, t0.Add(certValidity)); err != nil {
		t.Errorf("VerifyDevice at NotAfter = %v, want valid", err)
	}
}

func TestVerifyDevice_RejectsUntrusted(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	d := newDevice(t)
	leaf := ca.issue(t, d)
	serverAuth := leafTemplate(tenantA, d.id)
	serverAuth.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	// The root key signing a device certificate directly skips the tenant CA.
	fromRoot := craft(t, leafTemplate(tenantA, d.id), p.root, &d.key.PublicKey, p.key)
	otherPlatform := newPlatform(t)
	tests := []struct {
		name          string
		cert          *x509.Certificate
		intermediates []*x509.Certificate
		root          *x509.Certificate
	}{
		{"ca-not-trusted", leaf, nil, p.root},
		{"other-root", leaf, []*x509.Certificate{ca.cert}, otherPlatform.root},
		{"server-auth-only", ca.craft(t, serverAuth, &d.key.PublicKey), []*x509.Certificate{ca.cert}, p.root},
		{"signed-by-root", fromRoot, []*x509.Certificate{ca.cert}, p.root},
		{"signed-by-root-alone", fromRoot, nil, p.root},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, _, err := deviceca.VerifyDevice(tt.cert, tt.intermediates, tt.root, t0.Add(time.Hour))
			wantErr(t, "VerifyDevice", err, deviceca.ErrUntrusted)
		})
	}
}

func TestVerifyDevice_RejectsNil(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	leaf := ca.issue(t, newDevice(t))
	_, _, _, err := deviceca.VerifyDevice(nil, []*x509.Certificate{ca.cert}, p.root, t0)
	wantErr(t, "VerifyDevice(nil)", err, deviceca.ErrInvalidInput)
	_, _, _, err = deviceca.VerifyDevice(leaf, []*x509.Certificate{ca.cert}, nil, t0)
	wantErr(t, "VerifyDevice(no root)", err, deviceca.ErrInvalidInput)
	_, _, err = deviceca.ParseDeviceURI(nil)
	wantErr(t, "ParseDeviceURI(nil)", err, deviceca.ErrInvalidInput)
}

func TestChain(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	a := p.newCA(t, tenantA, caIDA)
	a2 := p.newCA(t, tenantA, caIDB)
	got := deviceca.Chain(p.root, a.cert, nil, a2.cert)
	var raws [][]byte
	for rest := got; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				t.Fatalf("Chain output has trailing data %q", rest)
			}
			break
		}
		if b.Type != "CERTIFICATE" {
			t.Fatalf("Chain block type %q, want CERTIFICATE", b.Type)
		}
		raws = append(raws, b.Bytes)
	}
	want := [][]byte{a.cert.Raw, a2.cert.Raw, p.root.Raw}
	if len(raws) != len(want) {
		t.Fatalf("Chain has %d certificates, want %d", len(raws), len(want))
	}
	for i := range want {
		if !bytes.Equal(raws[i], want[i]) {
			t.Errorf("Chain certificate %d differs, want CA, CA, root", i)
		}
	}
}
