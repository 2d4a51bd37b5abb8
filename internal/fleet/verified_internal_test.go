package fleet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/identity"
)

// TestVerifyChain_KeptAcrossAReloadOfTheSameCAsOnly: a device chain verified once is not
// verified again when the tenant's trust is reloaded and holds the same CAs (each
// trustTTL: before, every device's chain cost two ECDSA verifications again, 18% of the
// server's CPU in a 10,000-device update), and is verified again when the trusted CAs
// change (a CA added, or removed after its rotation's overlap), when the root changes,
// and once the chain expired. The trusts below keep their sums but drop
// their CAs: a trust that had to verify the chain again cannot.
func TestVerifyChain_KeptAcrossAReloadOfTheSameCAsOnly(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	const tenantID = "tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f"
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := deviceca.NewRootCertificate(rootKey, "test root", now.Add(-time.Hour), 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	root, err := deviceca.ParseRootCertificate(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	newCA := func(caID string, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := deviceca.NewCAKey()
		if err != nil {
			t.Fatal(err)
		}
		csrPEM, err := deviceca.NewCSR(key, tenantID, caID)
		if err != nil {
			t.Fatal(err)
		}
		caPEM, err := deviceca.SignCA(root, rootKey, csrPEM, now.Add(-time.Hour), validity)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := deviceca.ParseCSR(csrPEM)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := deviceca.CheckCA(root, caPEM, csr, now)
		if err != nil {
			t.Fatal(err)
		}
		return ca, key
	}
	ca, caKey := newCA("dca_1", 30*24*time.Hour)
	other, _ := newCA("dca_2", 365*24*time.Hour)
	devKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _, err := deviceca.Issue(ca, caKey, deviceca.IssueRequest{DevicePublicKey: &devKey.PublicKey, TenantID: tenantID,
		DeviceID: string(identity.IDFromPublicKey(&devKey.PublicKey)), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	clock := now
	s := &Service{cfg: Config{Now: func() time.Time { return clock }}, verified: map[[32]byte]verified{}}
	trust := func(cas ...*x509.Certificate) *tenantTrust {
		tr := &tenantTrust{loaded: clock, trusted: cas}
		tr.seal()
		tr.trusted = nil // its sum stays; it can verify nothing
		return tr
	}
	first := &tenantTrust{loaded: now, trusted: []*x509.Certificate{ca}}
	first.seal()
	if _, _, err := s.verifyChain(leaf, first, root); err != nil {
		t.Fatalf("first verification: %v", err)
	}
	clock = now.Add(trustTTL) // the trust reloaded, the same CA
	if _, _, err := s.verifyChain(leaf, trust(ca), root); err != nil {
		t.Errorf("after a reload of the same CA: %v, want the chain kept", err)
	}
	if _, _, err := s.verifyChain(leaf, trust(ca, other), root); err == nil {
		t.Error("a chain was kept across a change of the trusted CAs")
	}
	otherRoot := *root
	otherRoot.Raw = append([]byte{0}, root.Raw...)
	if _, _, err := s.verifyChain(leaf, trust(ca), &otherRoot); err == nil {
		t.Error("a chain was kept across a change of the root")
	}
	clock = leaf.NotAfter
	if _, _, err := s.verifyChain(leaf, trust(ca), root); err == nil {
		t.Error("a chain was kept past its leaf's expiry")
	}
}
