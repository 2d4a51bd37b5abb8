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
	"github.com/moat-iot/moat/internal/fleet/nonce"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/identity"
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

// peek reads the claims in one pass over the envelope, not one for the envelope and
// another for its signed bytes: it is lenient, since attest.VerifyKey decodes strictly
// what is judged, and refuses evidence whose claims are not the device's and nonce peek
// read.
func peek(data []byte) (claimed, error) {
	var env struct {
		Signed claimed `json:"signed"`
	}
	if len(data) > MaxEvidenceBytes {
		return claimed{}, attest.ErrTooLarge
	}
	if err := json.Unmarshal(data, &env); err != nil || !identity.ValidID(env.Signed.DeviceID) {
		return claimed{}, attest.ErrMalformed
	}
	return env.Signed, nil
}

// maxAttestAttempts bounds how often one attestation is worked out again because its
// device changed between the read and the write (another attestation of it, an
// operator's change).
const maxAttestAttempts = 4

// errDeviceChanged: the device changed after the attestation read it.
var errDeviceChanged = errors.New("device changed during attestation")

// errSpentElsewhere: the store found the attestation's nonce spent (on another replica, or
// before this one restarted) after its write had changed the device in the shared
// transaction; the write is undone with it (batch.go) and the replay recorded instead.
var errSpentElsewhere = errors.New("nonce spent elsewhere")

// attest works an attestation out in the caller's goroutine (read the device, verify the
// evidence once, check the policy, sign the certificate: the crypto, in parallel with
// other callers) and then has its one write committed with concurrent ones (batch.go).
// The write re-reads the device and applies the outcome only if the device is still the
// version the outcome was worked out from; otherwise the outcome is worked out again.
func (s *Service) attest(ctx context.Context, data []byte) (Issued, error) {
	now := s.cfg.Now().UTC()
	c, err := peek(data)
	if err != nil {
		return Issued{}, refuse(device.RefusedBadSignature, "evidence: %v", err)
	}
	id := device.ID(c.DeviceID)
	t := s.commits.announce()
	defer t.release()
	a := &attempt{s: s, id: id, nonce: c.Nonce, now: now}
	for n := 1; ; n++ {
		if err := a.workOut(ctx, data); err != nil {
			return Issued{}, err
		}
		if a.write == nil { // refused without a write (a replay seen before)
			return Issued{}, a.refusal
		}
		err := s.commits.do(ctx, t, a.run)
		if errors.Is(err, errSpentElsewhere) {
			// The batch went on without this write; the replay is recorded instead.
			a.spentElsewhere = true
			err = s.commits.do(ctx, nil, a.run)
		}
		// The device's row may have changed (whatever the outcome: a commit that succeeded
		// under an error still counts): its cached copies end, here and elsewhere, before
		// the device hears the answer (devcache.go).
		s.deviceChanged(id)
		if errors.Is(err, store.ErrStale) {
			// Another replica's write to the device came between this write's read and
			// its update; the batch went on without it, its nonce unspent: work it out again.
			a.changed, err = true, nil
		}
		if err != nil {
			a.unreserve()
			return Issued{}, err
		}
		switch {
		case a.changed && n < maxAttestAttempts:
			t = nil // announced and queued already
			continue
		case a.changed:
			a.unreserve()
			return Issued{}, fmt.Errorf("device %s: %w", id, errDeviceChanged)
		case a.replayed:
			return Issued{}, a.replay
		case a.refusal != nil:
			return Issued{}, a.refusal
		}
		return a.issued, nil
	}
}

// workOut reads the device, verifies the evidence (once) and decides the outcome, with at
// most one caller per CPU at a time: past that, more callers would only take turns on the
// CPUs with the committer, whose one goroutine every attestation waits for (profiled:
// with 32 at once, the committer's batches took ten times as long).
func (a *attempt) workOut(ctx context.Context, data []byte) error {
	select {
	case a.s.cpu <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-a.s.cpu }()
	dev, productName, cat, err := a.s.readAttesting(ctx, a.id)
	if errors.Is(err, store.ErrNotFound) {
		return refuse(device.RefusedUnknownDevice, "device %s is not registered", a.id)
	}
	if err != nil {
		return err
	}
	a.dev = dev
	if a.ev == nil {
		if err := a.verify(ctx, dev, data); err != nil {
			return err
		}
	}
	if err := a.decide(ctx, dev, productName, cat); err != nil {
		a.unreserve()
		return err
	}
	return nil
}

// readAttesting reads the device, the name of its product and its tenant's catalog (nil
// when it is unclaimed) in one read transaction.
func (s *Service) readAttesting(ctx context.Context, id device.ID) (device.Device, string, *repo.Catalog, error) {
	var dev device.Device
	var productName string
	var cat *repo.Catalog
	err := s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		var err error
		if dev, err = tx.Devices().Get(ctx, id); err != nil {
			return err
		}
		if dev.TenantID == "" {
			return nil
		}
		tt, err := tx.ForTenant(dev.TenantID)
		if err != nil {
			return err
		}
		if dev.ProductID != "" {
			if p, err := tt.Products().Get(ctx, dev.ProductID); err == nil {
				productName = p.Name
			}
		}
		cat, err = s.cfg.Repo.CatalogIn(ctx, tt)
		return err
	})
	return dev, productName, cat, err
}

// attempt is one attestation on its way: what the caller's goroutine worked out, and the
// write that makes it durable (run, in a shared transaction).
type attempt struct {
	s     *Service
	id    device.ID
	nonce string
	now   time.Time

	ev       *attest.Evidence
	pub      *ecdsa.PublicKey
	expires  time.Time // the nonce's, once Check accepted it
	reserved bool      // the nonce is claimed in the replica's spent set
	replay   *Refusal  // the answer when the store finds the nonce spent

	// The outcome, from decide, for the device at version, as read (dev).
	dev     device.Device
	version int64
	write   *outcome // nil: nothing to write
	spend   bool     // the write spends the nonce
	cert    *device.Certificate
	issued  Issued
	refusal *Refusal
	signed  *signedCert // kept across attempts while the issuing CA is the same

	// spentElsewhere: the store found the nonce spent; run records the replay.
	spentElsewhere bool

	// Set by run.
	changed, replayed bool
}

type signedCert struct {
	caID, chain, serial string
	notAfter            time.Time
}

// verify checks the evidence's signature with the device's registered key, once per
// attestation, and then its nonce (issued to this device, unexpired, and not seen spent
// by this replica).
func (a *attempt) verify(ctx context.Context, dev device.Device, data []byte) error {
	s := a.s
	key, err := s.devKeys.get(dev.ID, dev.PublicKeyPEM)
	if err != nil {
		return fmt.Errorf("stored key of device %s: %w", dev.ID, err)
	}
	ev, err := attest.VerifyKey(data, key, attest.Expect{DeviceID: string(dev.ID), Nonce: a.nonce, Now: a.now})
	if err != nil {
		reason := device.RefusedBadSignature
		if errors.Is(err, attest.ErrStale) {
			reason = device.RefusedNonce
		}
		// Not recorded on the device: anybody can send evidence that names it.
		r := refuse(reason, "device %s: %v", dev.ID, err)
		if reason == device.RefusedBadSignature && dev.TenantID != "" {
			if err := s.auditForgery(ctx, dev, a.nonce, r, a.now); err != nil {
				return err
			}
		}
		return r
	}
	a.ev, a.pub = &ev, key.Public()
	a.replay = refuse(device.RefusedNonce, "nonce: %v", store.ErrNonceUsed)
	return nil
}

// decide works out the outcome for dev as read (with its product's name and its tenant's
// catalog): a nonce refusal, a policy refusal, or a certificate (signed here, outside any
// transaction).
func (a *attempt) decide(ctx context.Context, dev device.Device, productName string, cat *repo.Catalog) error {
	s := a.s
	a.version, a.write, a.spend, a.cert, a.refusal, a.issued = dev.Version, nil, false, nil, nil, Issued{}
	if a.expires.IsZero() {
		expires, err := s.nonces.Check(a.id, a.nonce, a.now)
		if err != nil {
			// A nonce not issued to the device, or expired: recorded, but the device's
			// current certificate stands (a replayer must not be able to revoke it).
			a.refusal = refuse(device.RefusedNonce, "nonce: %v", err)
			a.write, a.version = &outcome{refusal: a.refusal}, 0
			return nil
		}
		fresh, note := s.spent.reserve(a.nonce, expires, a.now)
		if !fresh {
			// A replay this replica saw spent (or being spent): the first replay is
			// recorded, later ones only counted (TestNonce_SingleUseUnderConcurrency).
			a.refusal = a.replay
			if note {
				a.write, a.version = &outcome{refusal: a.refusal}, 0
			}
			return nil
		}
		a.expires, a.reserved = expires, true
	}
	a.spend = true
	var tr *tenantTrust
	if dev.TenantID != "" {
		var err error
		if tr, err = s.tenantTrust(ctx, dev.TenantID); err != nil {
			return err
		}
	}
	if r := s.check(ctx, dev, productName, *a.ev, cat); r != nil {
		if recoverable[r.Reason] {
			var err error
			if r.Recovery, err = s.newRecovery(dev, a.now); err != nil {
				return err
			}
		}
		// Fresh evidence the device signed shows it may not be trusted now: its current
		// certificate stops working too.
		a.refusal, a.write = r, &outcome{refusal: r, revoke: true}
		return nil
	}
	if tr.issuer == nil {
		a.refusal = refuse(device.RefusedNoCA, "tenant %s has no active device CA", dev.TenantID)
		a.write = &outcome{refusal: a.refusal}
		return nil
	}
	if err := a.sign(tr.issuer, dev); err != nil {
		return err
	}
	a.issued = Issued{ChainPEM: a.signed.chain, Serial: a.signed.serial, NotAfter: a.signed.notAfter}
	a.cert = &device.Certificate{
		Serial: a.signed.serial, DeviceID: dev.ID, TenantID: dev.TenantID, CAID: tr.issuer.id,
		ProductID: dev.ProductID, GroupID: dev.GroupID, Images: measurements(*a.ev),
		IssuedAt: a.now, NotAfter: a.signed.notAfter,
	}
	a.write = &outcome{issued: &a.issued}
	return nil
}

// sign issues the device certificate from the tenant's active CA, unless an earlier
// attempt of this attestation signed one with the same CA already.
func (a *attempt) sign(iss *issuer, dev device.Device) error {
	if a.signed != nil && a.signed.caID == iss.id {
		return nil
	}
	notAfter := a.now.Add(a.s.cfg.CertLifetime)
	if notAfter.After(iss.cert.NotAfter) {
		notAfter = iss.cert.NotAfter
	}
	der, serial, err := iss.signer.Issue(deviceca.IssueRequest{
		DevicePublicKey: a.pub, TenantID: string(dev.TenantID), DeviceID: string(dev.ID),
		NotBefore: a.now.Add(-5 * time.Minute), NotAfter: notAfter,
	})
	if err != nil {
		return fmt.Errorf("issue certificate: %w", err)
	}
	a.signed = &signedCert{caID: iss.id, serial: serial, notAfter: notAfter.UTC().Truncate(time.Second),
		chain: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) + iss.pem}
	return nil
}

// run is the attestation's write, in a transaction shared with concurrent ones. It may run
// more than once (batch.go), so it sets its results afresh.
//
// An outcome worked out for the device at a version is written over the device as workOut
// read it, by a write conditional on that version (store.Devices.Attested): one statement
// that finds the device changed having written nothing, where a read in the transaction
// and a comparison cost one more (issue 15). So the device is written first, and the nonce
// spent after it: a nonce found spent then fails this write alone (errSpentElsewhere),
// and its batch goes on without it.
func (a *attempt) run(ctx context.Context, tx store.Tx) error {
	s := a.s
	a.changed, a.replayed = false, false
	if a.spentElsewhere || a.version == 0 {
		// A replay the store found, or a refusal written whatever the device's version:
		// over the device as this transaction reads it. The nonce insert that found the
		// replay waited for the spender's commit, which may have changed the device since
		// workOut read it (PostgreSQL, read committed).
		dev, err := tx.Devices().Get(ctx, a.id)
		if err != nil {
			return err
		}
		if a.spentElsewhere {
			a.replayed = true
			return s.record(ctx, tx, dev, *a.ev, outcome{refusal: a.replay}, a.now)
		}
		return s.record(ctx, tx, dev, *a.ev, *a.write, a.now)
	}
	err := s.record(ctx, tx, a.dev, *a.ev, *a.write, a.now)
	if errors.Is(err, store.ErrStale) {
		a.changed = true // nothing written: worked out again by the caller
		return nil
	}
	if err != nil {
		return err
	}
	if a.spend {
		if err := nonce.Record(ctx, tx, a.id, a.nonce, a.expires, a.now); err != nil {
			if errors.Is(err, nonce.ErrRefused) {
				return errSpentElsewhere
			}
			return err
		}
	}
	if a.cert != nil {
		tt, err := tx.ForTenant(a.dev.TenantID)
		if err != nil {
			return err
		}
		if err := tt.Certificates().Record(ctx, *a.cert); err != nil {
			return fmt.Errorf("record certificate %s: %w", a.cert.Serial, err)
		}
	}
	return nil
}

// unreserve forgets the nonce's claim after a failure that wrote nothing durable.
func (a *attempt) unreserve() {
	if a.reserved {
		a.s.spent.release(a.nonce)
		a.reserved = false
	}
}

// check applies the policy to verified evidence, in the order of device.RefusalReasons.
// productName is the name of the device's product ("" when it has none).
func (s *Service) check(ctx context.Context, dev device.Device, productName string, ev attest.Evidence, cat *repo.Catalog) *Refusal {
	switch {
	case dev.TenantID == "" || cat == nil:
		return refuse(device.RefusedUnclaimed, "device %s is not claimed by a tenant", dev.ID)
	case dev.Blocked:
		return refuse(device.RefusedBlocked, "device %s is blocked", dev.ID)
	}
	sawOS := false
	for _, m := range ev.Measurements {
		if m.Kind == attest.KindOS {
			sawOS = true
		}
		if m.Kind == attest.KindApp && ev.DevelopmentMode && dev.Development {
			continue // a development device may run a side-loaded app
		}
		if r := s.checkImage(ctx, dev, m, cat, productName); r != nil {
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

func (s *Service) checkImage(ctx context.Context, dev device.Device, m attest.Measurement, cat *repo.Catalog, productName string) *Refusal {
	im, ok := cat.Images[m.Path]
	if !ok || im.SHA256 != m.SHA256 {
		if s.wasListed(ctx, dev, m) {
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

// wasListed reports whether the measured image was ever a signed image of the device's
// tenant (then revoked); read only on the refusal path.
func (s *Service) wasListed(ctx context.Context, dev device.Device, m attest.Measurement) bool {
	was := false
	_ = s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(dev.TenantID)
		if err != nil {
			return err
		}
		was, err = repo.WasListedIn(ctx, tt, m.Path, m.SHA256)
		return err
	})
	return was
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

// outcome is what an attestation ends in: a certificate issued, or a refusal that may
// also revoke the device's current certificate.
type outcome struct {
	issued  *Issued
	refusal *Refusal
	revoke  bool
}

// record writes the attestation outcome on the device; on success it makes the new
// certificate the device's current one and raises the floors to the attested security
// versions (they never fall). dev is the device as read at the version the write is
// conditional on (ErrStale when it changed).
func (s *Service) record(ctx context.Context, tx store.Tx, dev device.Device, ev attest.Evidence, o outcome, now time.Time) error {
	prev := dev
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
	// The attestation is the device's last contact, in the same statement; a replayed
	// nonce is not the device calling, and an unclaimed device's contact is not kept.
	var seen *time.Time
	if dev.TenantID != "" && (o.refusal == nil || o.refusal.Reason != device.RefusedNonce) {
		seen = &now
	}
	if err := tx.Devices().Attested(ctx, prev, dev, seen); err != nil {
		return err
	}
	if o.refusal == nil || dev.TenantID == "" {
		return nil
	}
	tt, err := tx.ForTenant(dev.TenantID)
	if err != nil {
		return err
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
