package fleet

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/envelope"
	"github.com/moat-iot/moat/internal/fleet/nonce"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
)

// Refusal is why an attestation was refused. Only support staff and metrics see it; the
// device gets Recovery when what it runs is merely out of date.
type Refusal struct {
	Reason   string // one of device.RefusalReasons
	Detail   string
	Recovery *Recovery
}

func (r *Refusal) Error() string { return "attestation refused: " + r.Reason + ": " + r.Detail }

// Is makes errors.Is(err, ErrRefused) true for a *Refusal.
func (r *Refusal) Is(target error) bool { return target == ErrRefused }

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Issued is a certificate issued after a successful attestation.
type Issued struct {
	// ChainPEM is the device certificate followed by the issuing tenant CA's.
	ChainPEM string    `json:"certificate_chain_pem"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// MaxEvidenceBytes bounds an evidence envelope.
const MaxEvidenceBytes = attest.DefaultMaxBytes

// Attest verifies evidence and issues a device certificate. A refusal is a *Refusal
// (errors.Is ErrRefused); any other error is the server's.
func (s *Service) Attest(ctx context.Context, data []byte) (Issued, error) {
	is, err := s.attest(ctx, data)
	var r *Refusal
	switch {
	case errors.As(err, &r):
		s.metrics.attestations.WithLabelValues("refused").Inc()
		s.metrics.refusals.WithLabelValues(r.Reason).Inc()
		s.cfg.Logger.WarnContext(ctx, "attestation refused", "reason", r.Reason, "detail", r.Detail)
	case err == nil:
		s.metrics.attestations.WithLabelValues("issued").Inc()
	}
	return is, err
}

// claimed is what Attest reads from evidence before verifying it: only which device's key
// to verify with and which nonce to spend.
type claimed struct {
	DeviceID string `json:"device_id"`
	Nonce    string `json:"nonce"`
}

func peek(data []byte) (claimed, error) {
	var env envelope.Signed
	var c claimed
	if len(data) > MaxEvidenceBytes {
		return c, attest.ErrTooLarge
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return c, attest.ErrMalformed
	}
	if err := json.Unmarshal(env.Signed, &c); err != nil || !identity.ValidID(c.DeviceID) {
		return c, attest.ErrMalformed
	}
	return c, nil
}

func (s *Service) attest(ctx context.Context, data []byte) (Issued, error) {
	now := s.cfg.Now().UTC()
	c, err := peek(data)
	if err != nil {
		return Issued{}, refuse(device.RefusedBadSignature, "evidence: %v", err)
	}
	id := device.ID(c.DeviceID)
	var dev device.Device
	err = s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		var err error
		dev, err = tx.Devices().Get(ctx, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return Issued{}, refuse(device.RefusedUnknownDevice, "device %s is not registered", id)
	}
	if err != nil {
		return Issued{}, err
	}
	pub, err := keys.ParsePublicPEM([]byte(dev.PublicKeyPEM))
	if err != nil {
		return Issued{}, fmt.Errorf("stored key of device %s: %w", id, err)
	}
	ev, err := attest.Verify(data, pub, attest.Expect{DeviceID: string(id), Nonce: c.Nonce, Now: now})
	if err != nil {
		reason := device.RefusedBadSignature
		if errors.Is(err, attest.ErrStale) {
			reason = device.RefusedNonce
		}
		// Not recorded on the device: anybody can send evidence that names it.
		r := refuse(reason, "device %s: %v", id, err)
		if reason == device.RefusedBadSignature && dev.TenantID != "" {
			if err := s.auditForgery(ctx, dev, c.Nonce, r, now); err != nil {
				return Issued{}, err
			}
		}
		return Issued{}, r
	}
	// The catalog and the tenant's CAs are read before the write transaction, not inside
	// it: a read transaction nested in a write one needs a second pooled connection, and
	// as many concurrent attestations as the pool has connections then wait for each
	// other forever (TestAttest_1000Concurrent on PostgreSQL).
	var cat *repo.Catalog
	var tr *tenantTrust
	if dev.TenantID != "" {
		if cat, err = s.cfg.Repo.Catalog(ctx, dev.TenantID); err != nil {
			return Issued{}, err
		}
		if tr, err = s.tenantTrust(ctx, dev.TenantID); err != nil {
			return Issued{}, err
		}
	}
	var is Issued
	var refusal *Refusal
	err = s.cfg.Store.InTx(ctx, func(tx store.Tx) error {
		refusal = nil
		if err := s.nonces.Spend(ctx, tx, id, c.Nonce, now); err != nil {
			if errors.Is(err, nonce.ErrRefused) {
				// A replay of genuine evidence, or a nonce not issued to the device or
				// expired: recorded, but the device's current certificate stands (a
				// replayer must not be able to revoke it).
				refusal = refuse(device.RefusedNonce, "nonce: %v", err)
				dev, err := tx.Devices().Get(ctx, id)
				if err != nil {
					return err
				}
				return s.record(ctx, tx, dev, ev, outcome{refusal: refusal}, now)
			}
			return err
		}
		dev, err := tx.Devices().Get(ctx, id)
		if err != nil {
			return err
		}
		if refusal = s.check(ctx, tx, dev, ev, cat); refusal != nil {
			if recoverable[refusal.Reason] {
				if refusal.Recovery, err = s.newRecovery(dev, now); err != nil {
					return err
				}
			}
			// Fresh evidence the device signed shows it may not be trusted now: its current
			// certificate stops working too.
			return s.record(ctx, tx, dev, ev, outcome{refusal: refusal, revoke: true}, now)
		}
		is, refusal, err = s.issue(ctx, tx, tr, dev, pub, ev, now)
		if err != nil {
			return err
		}
		if refusal != nil {
			return s.record(ctx, tx, dev, ev, outcome{refusal: refusal}, now)
		}
		return s.record(ctx, tx, dev, ev, outcome{issued: &is}, now)
	})
	if err != nil {
		return Issued{}, err
	}
	if refusal != nil {
		return Issued{}, refusal
	}
	return is, nil
}

// check applies the policy to verified evidence, in the order of device.RefusalReasons.
func (s *Service) check(ctx context.Context, tx store.Tx, dev device.Device, ev attest.Evidence, cat *repo.Catalog) *Refusal {
	switch {
	case dev.TenantID == "" || cat == nil:
		return refuse(device.RefusedUnclaimed, "device %s is not claimed by a tenant", dev.ID)
	case dev.Blocked:
		return refuse(device.RefusedBlocked, "device %s is blocked", dev.ID)
	}
	tt, err := tx.ForTenant(dev.TenantID)
	if err != nil {
		return refuse(device.RefusedUnclaimed, "device %s: %v", dev.ID, err)
	}
	var productName string
	if dev.ProductID != "" {
		if p, err := tt.Products().Get(ctx, dev.ProductID); err == nil {
			productName = p.Name
		}
	}
	sawOS := false
	for _, m := range ev.Measurements {
		if m.Kind == attest.KindOS {
			sawOS = true
		}
		if m.Kind == attest.KindApp && ev.DevelopmentMode && dev.Development {
			continue // a development device may run a side-loaded app
		}
		if r := s.checkImage(ctx, tt, dev, m, cat, productName); r != nil {
			return r
		}
	}
	if !sawOS {
		return refuse(device.RefusedUnknownImage, "no OS image measured")
	}
	if ev.DevelopmentMode && !dev.Development {
		return refuse(device.RefusedDevelopmentMode, "device %s reports development mode without the development capability", dev.ID)
	}
	return nil
}

func (s *Service) checkImage(ctx context.Context, tt store.TenantTx, dev device.Device, m attest.Measurement, cat *repo.Catalog, productName string) *Refusal {
	im, ok := cat.Images[m.Path]
	if !ok || im.SHA256 != m.SHA256 {
		if was, err := repo.WasListedIn(ctx, tt, m.Path, m.SHA256); err == nil && was {
			return refuse(device.RefusedRevokedImage, "%s (sha256 %.16s) is revoked", m.Path, m.SHA256)
		}
		return refuse(device.RefusedUnknownImage, "%s (sha256 %.16s) is not a signed image of the tenant", m.Path, m.SHA256)
	}
	if im.Kind != m.Kind || im.Version != m.Version || im.SecurityVersion != m.SecurityVersion {
		return refuse(device.RefusedUnknownImage, "%s: measured %s %s security version %d, signed %s %s security version %d",
			m.Path, m.Kind, m.Version, m.SecurityVersion, im.Kind, im.Version, im.SecurityVersion)
	}
	if im.Kind == attest.KindApp && productName != "" && !strings.EqualFold(im.Product, productName) {
		return refuse(device.RefusedUnknownImage, "%s is for product %s, the device is a %s", m.Path, im.Product, productName)
	}
	if floor := dev.Floors[im.Component()]; m.SecurityVersion < floor {
		return refuse(device.RefusedBelowFloor, "%s security version %d is below the device's floor %d", m.Path, m.SecurityVersion, floor)
	}
	return nil
}

// auditForgery writes evidence that named a claimed device but was not signed by its key
// to the tenant's audit log (ATTACKS row 3; attacked by
// TestAttest_EvidenceFromUnknownKeyIsAudited), when it carries a nonce the server issued
// for that device, which it spends: each issued nonce buys at most one event, so strangers
// cannot flood the log. The device's record is left alone.
func (s *Service) auditForgery(ctx context.Context, dev device.Device, presented string, r *Refusal, now time.Time) error {
	return s.cfg.Store.InTx(ctx, func(tx store.Tx) error {
		err := s.nonces.Spend(ctx, tx, dev.ID, presented, now)
		if errors.Is(err, nonce.ErrRefused) {
			return nil
		}
		if err != nil {
			return err
		}
		tt, err := tx.ForTenant(dev.TenantID)
		if err != nil {
			return err
		}
		return tt.Audit().Append(ctx, audit.Event{
			ID: ident.New(audit.IDPrefix, now), TenantID: dev.TenantID, At: now,
			Action: "device.attestation_refused", ObjectType: "device", ObjectID: string(dev.ID),
			Detail: r.Reason + ": " + r.Detail,
		})
	})
}

// issue signs the device certificate and records it; a tenant without an active CA is a
// refusal the operator resolves (moat platform ca-sign).
func (s *Service) issue(ctx context.Context, tx store.Tx, tr *tenantTrust, dev device.Device, pub *ecdsa.PublicKey, ev attest.Evidence, now time.Time) (Issued, *Refusal, error) {
	if tr.issuer == nil {
		return Issued{}, refuse(device.RefusedNoCA, "tenant %s has no active device CA", dev.TenantID), nil
	}
	notAfter := now.Add(s.cfg.CertLifetime)
	if notAfter.After(tr.issuer.cert.NotAfter) {
		notAfter = tr.issuer.cert.NotAfter
	}
	der, serial, err := deviceca.Issue(tr.issuer.cert, tr.issuer.key, deviceca.IssueRequest{
		DevicePublicKey: pub, TenantID: string(dev.TenantID), DeviceID: string(dev.ID),
		NotBefore: now.Add(-5 * time.Minute), NotAfter: notAfter,
	})
	if err != nil {
		return Issued{}, nil, fmt.Errorf("issue certificate: %w", err)
	}
	tt, err := tx.ForTenant(dev.TenantID)
	if err != nil {
		return Issued{}, nil, err
	}
	rec := device.Certificate{
		Serial: serial, DeviceID: dev.ID, TenantID: dev.TenantID, CAID: tr.issuer.id,
		ProductID: dev.ProductID, GroupID: dev.GroupID, Images: measurements(ev),
		IssuedAt: now, NotAfter: notAfter.UTC().Truncate(time.Second),
	}
	if err := tt.Certificates().Record(ctx, rec); err != nil {
		return Issued{}, nil, fmt.Errorf("record certificate %s: %w", serial, err)
	}
	chain := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tr.issuer.cert.Raw}))
	return Issued{ChainPEM: chain, Serial: serial, NotAfter: rec.NotAfter}, nil, nil
}

// outcome is what an attestation ends in: a certificate issued, or a refusal that may
// also revoke the device's current certificate.
type outcome struct {
	issued  *Issued
	refusal *Refusal
	revoke  bool
}

// record writes the attestation outcome on the device; on success it makes the new
// certificate the device's current one and raises the floors to the attested security
// versions (they never fall). dev is the device as this transaction read it.
func (s *Service) record(ctx context.Context, tx store.Tx, dev device.Device, ev attest.Evidence, o outcome, now time.Time) error {
	a := &device.Attestation{At: now, DevelopmentMode: ev.DevelopmentMode, Images: measurements(ev)}
	if o.revoke {
		dev.Certificate = nil
	}
	if r := o.refusal; r != nil {
		a.Refusal, a.Detail = r.Reason, r.Detail
	} else {
		a.Serial = o.issued.Serial
		dev.Certificate = &device.Current{Serial: o.issued.Serial, IssuedAt: now, NotAfter: o.issued.NotAfter}
		floors := maps.Clone(dev.Floors)
		if floors == nil {
			floors = map[string]uint32{}
		}
		for _, m := range ev.Measurements {
			comp := m.Path[:strings.LastIndexByte(m.Path, '/')]
			if m.SecurityVersion > floors[comp] {
				floors[comp] = m.SecurityVersion
			}
		}
		dev.Floors = floors
	}
	dev.Attestation = a
	dev.Version++
	if err := tx.Devices().Update(ctx, dev); err != nil {
		return err
	}
	if dev.TenantID == "" {
		return nil
	}
	tt, err := tx.ForTenant(dev.TenantID)
	if err != nil {
		return err
	}
	if err := seenAttesting(ctx, tt, dev.ID, o.refusal, now); err != nil {
		return err
	}
	if o.refusal == nil {
		return nil
	}
	// Support staff find refusals in the tenant's audit log too, with their reason.
	return tt.Audit().Append(ctx, audit.Event{
		ID: ident.New(audit.IDPrefix, now), TenantID: dev.TenantID, At: now,
		Action: "device.attestation_refused", ObjectType: "device", ObjectID: string(dev.ID),
		Detail: o.refusal.Reason + ": " + o.refusal.Detail,
	})
}

func measurements(ev attest.Evidence) []device.Measurement {
	out := make([]device.Measurement, 0, len(ev.Measurements))
	for _, m := range ev.Measurements {
		out = append(out, device.Measurement{Kind: m.Kind, Path: m.Path, SHA256: m.SHA256, Version: m.Version, SecurityVersion: m.SecurityVersion})
	}
	return out
}
