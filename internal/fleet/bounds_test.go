package fleet_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
	fl "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/tenant"
)

// TestAuthenticate_StrangersDoNotGrowTheTrustCache attacks the device API's authenticator
// with thousands of certificates naming made-up tenants (issue 10, defect 4): each from a
// CA the attacker made, presented with that CA and without it. Every one is refused, and
// the trust cache, the cache of verified chains and the negative cache stay as they were
// (the negative cache at most at its bound); the genuine device still gets in.
func TestAuthenticate_StrangersDoNotGrowTheTrustCache(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	svc := f.Server.Fleet()
	d := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	genuine := peer(t, cert.Certificate)
	if _, err := svc.Authenticate(ctx, genuine); err != nil {
		t.Fatalf("genuine device: %v", err)
	}
	trustBefore, verifiedBefore := fl.TrustCacheLen(svc), fl.VerifiedCacheLen(svc)

	const strangers = 3000
	rootKey, caKey := newKey(t), newKey(t)
	rootPEM, err := deviceca.NewRootCertificate(rootKey, "moat platform root", time.Now(), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	root, err := deviceca.ParseRootCertificate(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	for i := range strangers {
		made := tenant.ID(ident.New(tenant.IDPrefix, time.Now()))
		csr, err := deviceca.NewCSR(caKey, string(made), "dca_forged")
		if err != nil {
			t.Fatal(err)
		}
		caPEM, err := deviceca.SignCA(root, rootKey, csr, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(caPEM)
		ca, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		der, _, err := deviceca.Issue(ca, caKey, deviceca.IssueRequest{DevicePublicKey: d.Key.Public(), TenantID: string(made), DeviceID: d.ID,
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(30 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		chain := [][]byte{der, ca.Raw}
		if i%2 == 1 {
			chain = chain[:1] // the leaf alone: the service must look the tenant up
		}
		if _, err := svc.Authenticate(ctx, peer(t, chain)); !errors.Is(err, fl.ErrUnauthenticated) {
			t.Fatalf("certificate %d naming made-up tenant %s: %v, want ErrUnauthenticated", i, made, err)
		}
	}
	if got := fl.TrustCacheLen(svc); got != trustBefore {
		t.Errorf("trust cache after %d strangers: %d tenants, want %d as before", strangers, got, trustBefore)
	}
	if got := fl.VerifiedCacheLen(svc); got != verifiedBefore {
		t.Errorf("verified chains after %d strangers: %d, want %d as before", strangers, got, verifiedBefore)
	}
	if got := fl.UntrustedCacheLen(svc); got > fl.MaxUntrusted {
		t.Errorf("negative trust cache after %d strangers: %d, want at most %d", strangers, got, fl.MaxUntrusted)
	}
	if _, err := svc.Authenticate(ctx, genuine); err != nil {
		t.Errorf("genuine device after the strangers: %v", err)
	}
}

// peer is the connection state of a client that presented chain.
func peer(t *testing.T, chain [][]byte) *tls.ConnectionState {
	t.Helper()
	cs := &tls.ConnectionState{}
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		cs.PeerCertificates = append(cs.PeerCertificates, c)
	}
	return cs
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(fmt.Errorf("generate key: %w", err))
	}
	return k
}
