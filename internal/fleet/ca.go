package fleet

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// tenantTrust is what a replica caches of one tenant's CAs.
type tenantTrust struct {
	loaded  time.Time
	trusted []*x509.Certificate // CAs whose device certificates are accepted now
	issuer  *issuer             // the newest active CA, nil when none
	// sum names trusted by content (SHA-256 over each certificate's DER, in order), so that
	// a chain verified against one load is known verified against the next load of the
	// same CAs (authn.go, verifyChain); notAfter is the earliest end of their validity.
	sum      [32]byte
	notAfter time.Time
}

// seal computes the trust's sum and notAfter once its CAs are all added.
func (tr *tenantTrust) seal() {
	h := sha256.New()
	for _, c := range tr.trusted {
		h.Write(c.Raw)
		if tr.notAfter.IsZero() || c.NotAfter.Before(tr.notAfter) {
			tr.notAfter = c.NotAfter
		}
	}
	h.Sum(tr.sum[:0])
}

// issuer is the tenant's active CA, ready to sign: checked once per load of the tenant's
// trust (deviceca.Issuer), with its certificate's PEM for the chains it hands out.
type issuer struct {
	id     string
	cert   *x509.Certificate
	signer *deviceca.Issuer
	pem    string
}

// NewPendingCA creates a tenant device CA: its key, wrapped under the KEK and bound to the
// tenant and CA ID, and the certificate request the platform root signs offline
// (moat platform ca-sign). It stores nothing; the caller creates it in its transaction.
func (s *Service) NewPendingCA(t tenant.ID, now time.Time) (device.CA, error) {
	id := ident.New(device.CAIDPrefix, now)
	key, err := deviceca.NewCAKey()
	if err != nil {
		return device.CA{}, err
	}
	csr, err := deviceca.NewCSR(key, string(t), id)
	if err != nil {
		return device.CA{}, err
	}
	wrapped, err := deviceca.Wrap(s.cfg.KEK, key, wrapAAD(t, id))
	if err != nil {
		return device.CA{}, err
	}
	return device.CA{ID: id, TenantID: t, State: device.CAPending, CreatedAt: now.UTC(), CSRPEM: string(csr), WrappedKey: wrapped, Version: 1}, nil
}

func wrapAAD(t tenant.ID, caID string) string { return "moat device CA key|" + string(t) + "|" + caID }

// ActivateCA checks a certificate the platform root issued for a pending CA and makes the
// CA active; the tenant's other active CAs retire, trusted for CAOverlap more. It returns
// the updated CA. The caller's transaction stores it (with the retired ones).
func (s *Service) ActivateCA(ctx context.Context, tt store.TenantTx, caID string, certPEM []byte, now time.Time) (device.CA, error) {
	root, _, err := s.rootCert(ctx)
	if err != nil {
		return device.CA{}, err
	}
	ca, err := tt.DeviceCAs().Get(ctx, caID)
	if err != nil {
		return device.CA{}, err
	}
	if ca.State != device.CAPending {
		return device.CA{}, fmt.Errorf("%w: CA %s is %s, not pending", ErrBadCA, caID, ca.State)
	}
	info, err := deviceca.ParseCSR([]byte(ca.CSRPEM))
	if err != nil {
		return device.CA{}, fmt.Errorf("stored CSR of CA %s: %w", caID, err)
	}
	if _, err := deviceca.CheckCA(root, certPEM, info, now); err != nil {
		return device.CA{}, fmt.Errorf("%w: %w", ErrBadCA, err)
	}
	all, err := tt.DeviceCAs().List(ctx)
	if err != nil {
		return device.CA{}, err
	}
	retire := now.Add(CAOverlap).UTC()
	for _, old := range all {
		if old.State != device.CAActive {
			continue
		}
		old.State, old.RetireAt, old.Version = device.CARetired, &retire, old.Version+1
		if err := tt.DeviceCAs().Update(ctx, old); err != nil {
			return device.CA{}, err
		}
	}
	at := now.UTC()
	ca.State, ca.CertificatePEM, ca.ActivatedAt, ca.Version = device.CAActive, string(certPEM), &at, ca.Version+1
	if err := tt.DeviceCAs().Update(ctx, ca); err != nil {
		return device.CA{}, err
	}
	s.forget(tt.ID())
	return ca, nil
}

// forget drops the cached trust of a tenant (after a CA change on this replica; other
// replicas see it within trustTTL).
func (s *Service) forget(t tenant.ID) {
	s.mu.Lock()
	delete(s.trust, t)
	delete(s.untrusted, t)
	s.mu.Unlock()
}

// Chain returns the PEM chain a tenant's own cloud trusts its devices with: every CA of
// the tenant trusted now, newest first, then the platform root.
func (s *Service) Chain(ctx context.Context, t tenant.ID) ([]byte, error) {
	tr, err := s.tenantTrust(ctx, t)
	if err != nil {
		return nil, err
	}
	root, _, err := s.rootCert(ctx)
	if err != nil {
		return nil, err
	}
	cas := slices.Clone(tr.trusted)
	slices.Reverse(cas)
	return deviceca.Chain(root, cas...), nil
}

// Bounds of the trust caches. Only tenants with a CA the platform root certified enter the
// trust cache, so its size is the number of real tenants with devices on this replica; the
// cap is defence in depth (a replica past it reloads some tenants, which is correct, only
// slower). Tenant IDs with no trusted CA (made-up ones included: the authenticator reads
// them from certificates nobody has checked yet) are remembered only in the small negative
// cache, so a flood of them costs one indexed read each and a bounded amount of memory.
// Issue 10, defect 4; attacked by TestAuthenticate_StrangersDoNotGrowTheTrustCache.
const (
	maxTrust     = 1 << 13
	maxUntrusted = 1 << 10
)

// cachedTrust returns the tenant's cached trust while it is fresh, or nil.
func (s *Service) cachedTrust(t tenant.ID, now time.Time) *tenantTrust {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tr := s.trust[t]; tr != nil && now.Sub(tr.loaded) < trustTTL {
		return tr
	}
	if at, ok := s.untrusted[t]; ok && now.Sub(at) < trustTTL {
		return &tenantTrust{loaded: at}
	}
	return nil
}

// tenantTrust loads (or returns the cached) CA certificates and issuing key of a tenant. A
// tenant with no CA trusted now (or no such tenant) has an empty trust, which is remembered
// only in the bounded negative cache.
func (s *Service) tenantTrust(ctx context.Context, t tenant.ID) (*tenantTrust, error) {
	now := s.cfg.Now()
	if tr := s.cachedTrust(t, now); tr != nil {
		return tr, nil
	}
	var cas []device.CA
	err := s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		cas, err = tt.DeviceCAs().List(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	tr := &tenantTrust{loaded: now}
	for _, ca := range cas {
		if !ca.Trusted(now) {
			continue
		}
		cert, err := parseCertPEM(ca.CertificatePEM)
		if err != nil {
			return nil, fmt.Errorf("stored certificate of CA %s: %w", ca.ID, err)
		}
		tr.trusted = append(tr.trusted, cert)
		if ca.State == device.CAActive && now.Before(cert.NotAfter) {
			key, err := deviceca.Unwrap(s.cfg.KEK, ca.WrappedKey, wrapAAD(t, ca.ID))
			if err != nil {
				return nil, fmt.Errorf("unwrap key of CA %s: %w", ca.ID, err)
			}
			signer, err := deviceca.NewIssuer(cert, key)
			if err != nil {
				return nil, fmt.Errorf("CA %s: %w", ca.ID, err)
			}
			tr.issuer = &issuer{id: ca.ID, cert: cert, signer: signer,
				pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))}
		}
	}
	tr.seal()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(tr.trusted) == 0 {
		delete(s.trust, t)
		evictOne(s.untrusted, maxUntrusted)
		s.untrusted[t] = now
		return tr, nil
	}
	delete(s.untrusted, t)
	evictOne(s.trust, maxTrust)
	s.trust[t] = tr
	return tr, nil
}

// evictOne makes room for one more entry in a map bounded at limit by dropping an
// arbitrary one (map iteration order is unspecified, so repeated inserts do not always
// evict the same hot entry).
func evictOne[K comparable, V any](m map[K]V, limit int) {
	if len(m) < limit {
		return
	}
	for k := range m {
		delete(m, k)
		return
	}
}

func parseCertPEM(text string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(text))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}
