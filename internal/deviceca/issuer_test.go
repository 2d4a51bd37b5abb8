package deviceca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
)

// TestIssuer_CertificateIsIssues: the fast path makes the certificate Issue makes (every
// field but the serial and the signature), its signature verifies under the CA, and it
// passes VerifyDevice against the platform root.
func TestIssuer_CertificateIsIssues(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	d := newDevice(t)
	iss, err := deviceca.NewIssuer(ca.cert, ca.key)
	if err != nil {
		t.Fatalf("NewIssuer = %v", err)
	}
	der, serial, err := iss.Issue(ca.request(d))
	if err != nil {
		t.Fatalf("Issuer.Issue = %v", err)
	}
	fast := parseDER(t, der)
	slow := ca.issue(t, d)
	if fast.SerialNumber.Text(16) != serial || serial == slow.SerialNumber.Text(16) {
		t.Errorf("serial %s (certificate %s, Issue's %s): want the certificate's and a fresh one", serial, fast.SerialNumber.Text(16), slow.SerialNumber.Text(16))
	}
	if err := fast.CheckSignatureFrom(ca.cert); err != nil {
		t.Errorf("CheckSignatureFrom(CA) = %v", err)
	}
	// The to-be-signed parts differ only in the serial: swap it in and compare the bytes.
	slowTmpl := *slow
	if !bytes.Equal(fast.RawSubject, slow.RawSubject) || !bytes.Equal(fast.RawIssuer, slow.RawIssuer) ||
		!fast.NotBefore.Equal(slow.NotBefore) || !fast.NotAfter.Equal(slow.NotAfter) ||
		fast.KeyUsage != slowTmpl.KeyUsage || len(fast.Extensions) != len(slow.Extensions) ||
		fast.SignatureAlgorithm != slow.SignatureAlgorithm || fast.Version != slow.Version {
		t.Errorf("fast certificate differs from Issue's:\n%+v\n%+v", fast, slow)
	}
	for i := range fast.Extensions {
		if !fast.Extensions[i].Id.Equal(slow.Extensions[i].Id) || !bytes.Equal(fast.Extensions[i].Value, slow.Extensions[i].Value) {
			t.Errorf("extension %d: %v, Issue's %v", i, fast.Extensions[i], slow.Extensions[i])
		}
	}
	tenant, dev, _, err := deviceca.VerifyDevice(fast, []*x509.Certificate{ca.cert}, p.root, t0.Add(time.Hour))
	if err != nil || tenant != tenantA || dev != d.id {
		t.Errorf("VerifyDevice = %s, %s, %v; want %s, %s, nil", tenant, dev, err, tenantA, d.id)
	}
}

// TestIssuer_EncodesWhatX509Does: for CAs of two tenants, many device keys and validity
// times (to the second or not, UTCTime and GeneralizedTime years), the to-be-signed bytes
// the Issuer's template encodes are the bytes x509.CreateCertificate encodes for the same
// serial. A template that misplaced or misencoded any field would differ.
func TestIssuer_EncodesWhatX509Does(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	for _, ca := range []*tenantCA{p.newCA(t, tenantA, caIDA), p.newCA(t, tenantB, caIDB)} {
		iss, err := deviceca.NewIssuer(ca.cert, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		times := []time.Time{t0, t0.Add(1500 * time.Millisecond), time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC),
			time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2126, 7, 1, 0, 0, 0, 999, time.FixedZone("x", 3600))}
		for n := range 40 {
			d := newDevice(t)
			r := ca.request(d)
			r.NotBefore, r.NotAfter = times[n%len(times)], times[(n+1)%len(times)].Add(time.Duration(n)*time.Hour)
			sn := new(big.Int).Lsh(big.NewInt(int64(n+1)), uint(n*3)) // short and long serials
			fast, slow, err := iss.TBSBoth(r, sn)
			if err != nil {
				t.Fatalf("x509 encoding: %v", err)
			}
			if fast == nil || !bytes.Equal(fast, slow) {
				t.Fatalf("%s, device %s, %v to %v, serial %x: template encodes\n%x\nx509\n%x", ca.csr.TenantID, d.id, r.NotBefore, r.NotAfter, sn, fast, slow)
			}
		}
	}
}

// TestIssuer_RefusesWhatIssueRefuses: another tenant, a device ID that is not its key's,
// a period past the CA, and a key that is not the CA's.
func TestIssuer_RefusesWhatIssueRefuses(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	if _, err := deviceca.NewIssuer(ca.cert, newKey(t)); err == nil {
		t.Error("NewIssuer with another key = nil error, want ErrWrongKey")
	} else {
		wantErr(t, "NewIssuer(other key)", err, deviceca.ErrWrongKey)
	}
	iss, err := deviceca.NewIssuer(ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(t)
	r := ca.request(d)
	r.TenantID = tenantB
	_, _, err = iss.Issue(r)
	wantErr(t, "Issue(other tenant)", err, deviceca.ErrWrongTenant)
	r = ca.request(d)
	r.DeviceID = newDevice(t).id
	_, _, err = iss.Issue(r)
	wantErr(t, "Issue(other device)", err, deviceca.ErrWrongDevice)
	r = ca.request(d)
	r.NotAfter = ca.cert.NotAfter.Add(time.Hour)
	_, _, err = iss.Issue(r)
	wantErr(t, "Issue(past the CA)", err, deviceca.ErrInvalidInput)
}

// BenchmarkIssuer is BenchmarkIssue on the fast path: one signature, no self-check.
func BenchmarkIssuer(b *testing.B) {
	p := newPlatform(b)
	ca := p.newCA(b, tenantA, caIDA)
	req := ca.request(newDevice(b))
	iss, err := deviceca.NewIssuer(ca.cert, ca.key)
	if err != nil {
		b.Fatal(err)
	}
	const baseN = 2000
	digest := sha256.Sum256([]byte("baseline"))
	start := time.Now()
	for range baseN {
		if _, err := ecdsa.SignASN1(rand.Reader, ca.key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
	baseNs := float64(time.Since(start).Nanoseconds()) / baseN
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := iss.Issue(req); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(baseNs, "baseline-ns/op")
	b.ReportMetric(ns/baseNs, "x-baseline")
}
