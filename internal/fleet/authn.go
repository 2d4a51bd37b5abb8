package fleet

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Authenticate identifies the device behind a TLS connection by its client certificate:
// the certificate must chain through a CA of the tenant it names, trusted now, to the
// platform root; the server must have recorded it as issued to that device; and the
// device must still be claimed by that tenant and not blocked. The device's row is read
// from the store, or from the device cache (devcache.go) while no change to the device or
// its tenant has been heard of since it was read, so blocking takes effect at once on this
// replica and, through their change events, on the others. Every failure is
// ErrUnauthenticated, wrapped with the reason for the log.
func (s *Service) Authenticate(ctx context.Context, cs *tls.ConnectionState) (device.Device, error) {
	dev, err := s.authenticate(ctx, cs)
	if err != nil && errors.Is(err, ErrUnauthenticated) {
		s.metrics.authFailures.Inc()
	}
	return dev, err
}

func (s *Service) authenticate(ctx context.Context, cs *tls.ConnectionState) (device.Device, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return device.Device{}, fmt.Errorf("%w: no client certificate", ErrUnauthenticated)
	}
	leaf := cs.PeerCertificates[0]
	tid, did, ok := s.recentlyVerified(leaf)
	if !ok {
		var err error
		if tid, did, err = s.verifyLeaf(ctx, leaf, cs.PeerCertificates[1:]); err != nil {
			return device.Device{}, err
		}
	}
	serial := leaf.SerialNumber.Text(16)
	now := s.cfg.Now()
	if dev, ok := s.devices.get(tenant.ID(tid), device.ID(did), serial, now); ok {
		// The row as read for an earlier request with this certificate, current then, and
		// no change to the device, its tenant or every tenant since (devcache.go).
		s.seen(ctx, dev)
		return dev, nil
	}
	epoch := s.cache.epoch() // before the row is read: a change meanwhile keeps it out of the cache
	// One statement each, each on its own snapshot (store.OneRead): the device's row, and
	// only for a certificate other than its current one the certificate's record, which is
	// never removed once written, so the two need not agree on a snapshot.
	var dev device.Device
	err := s.readOne(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(tid))
		if err != nil {
			return err
		}
		dev, err = tt.Devices().Get(ctx, device.ID(did))
		return err
	})
	if err == nil && (dev.Certificate == nil || dev.Certificate.Serial != serial) {
		// Not the device's current certificate (that one was recorded as issued to it in the
		// same transaction that made it current, attest.go): its record must name the device.
		err = s.readOne(ctx, func(tx store.Tx) error {
			tt, err := tx.ForTenant(tenant.ID(tid))
			if err != nil {
				return err
			}
			rec, err := tt.Certificates().Get(ctx, serial)
			if err != nil {
				return err
			}
			if string(rec.DeviceID) != did {
				return store.ErrNotFound
			}
			return nil
		})
	}
	if errors.Is(err, store.ErrNotFound) {
		return device.Device{}, fmt.Errorf("%w: certificate %s of device %s is not on record for tenant %s", ErrUnauthenticated, serial, did, tid)
	}
	if err != nil {
		return device.Device{}, err
	}
	if dev.Blocked {
		return device.Device{}, fmt.Errorf("%w: device %s is blocked", ErrUnauthenticated, did)
	}
	switch cur := dev.Certificate; {
	case cur == nil:
		return device.Device{}, fmt.Errorf("%w: device %s: its latest attestation was refused", ErrUnauthenticated, did)
	case cur.Serial == serial:
		s.devices.put(dev, epoch, now)
	case !connStart(ctx, now).After(cur.IssuedAt.Add(SupersedeGrace)):
		// A connection the device opened before it renewed (or just after, racing the
		// renewal) still carries the previous certificate: the same device.
	default:
		s.identityConflict(ctx, dev, serial)
		return device.Device{}, fmt.Errorf("%w: device %s presented certificate %s, superseded by %s at %s", ErrUnauthenticated, did, serial, cur.Serial, cur.IssuedAt.Format(time.RFC3339))
	}
	s.seen(ctx, dev)
	return dev, nil
}

// verifyLeaf checks the leaf's names and its chain through the tenant it names to the
// platform root, and returns the tenant and device it names.
func (s *Service) verifyLeaf(ctx context.Context, leaf *x509.Certificate, presented []*x509.Certificate) (string, string, error) {
	t, _, err := deviceca.ParseDeviceURI(leaf)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	root, _, err := s.rootCert(ctx)
	if errors.Is(err, ErrNoPlatformCA) {
		return "", "", fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	} else if err != nil {
		return "", "", err
	}
	tr, err := s.trustFor(ctx, tenant.ID(t), leaf, presented, root)
	if err != nil {
		return "", "", err
	}
	tid, did, err := s.verifyChain(leaf, tr, root)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return tid, did, nil
}

// recentlyVerified returns the tenant and device of a leaf whose very bytes verifyChain
// verified against the same CAs and root as the tenant's trust and the root cached, fresh,
// now: the same bytes parse and verify the same way, so an update check does neither again
// (issue 15). The device's state is checked on every request (devcache.go).
func (s *Service) recentlyVerified(leaf *x509.Certificate) (string, string, bool) {
	now := s.cfg.Now()
	key := sha256.Sum256(leaf.Raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.verified[key]
	if !ok || !now.Before(v.until) || now.Before(leaf.NotBefore) {
		return "", "", false
	}
	tr, root := s.trust[tenant.ID(v.tenant)], s.root
	if tr == nil || now.Sub(tr.loaded) >= trustTTL || tr.sum != v.trust ||
		root.cert == nil || now.Sub(root.loaded) >= trustTTL || root.sum != v.root {
		return "", "", false // reloaded first, then verifyChain finds it by the sums
	}
	return v.tenant, v.device, true
}

// trustFor returns the trust to verify the leaf with, for the tenant the leaf names. The
// tenant ID comes from a certificate nobody has checked yet, so a tenant not in the trust
// cache is looked up only once the chain the client presented (the leaf and its issuing
// CA, as moat issues them) verifies to the platform root: a certificate from a CA of the
// client's own making is refused without a store read or a cache entry. A client that
// presents the leaf alone costs one indexed read, and a tenant with no trusted CA is kept
// only in the bounded negative cache (maxUntrusted). Issue 10, defect 4; attacked by
// TestAuthenticate_StrangersDoNotGrowTheTrustCache.
func (s *Service) trustFor(ctx context.Context, t tenant.ID, leaf *x509.Certificate, presented []*x509.Certificate, root *x509.Certificate) (*tenantTrust, error) {
	now := s.cfg.Now()
	if tr := s.cachedTrust(t, now); tr != nil {
		return tr, nil
	}
	if len(presented) > 0 {
		if _, _, _, err := deviceca.VerifyDevice(leaf, presented, root, now); err != nil {
			return nil, fmt.Errorf("%w: presented chain: %w", ErrUnauthenticated, err)
		}
	}
	tr, err := s.tenantTrust(ctx, t)
	if errors.Is(err, store.ErrNoTenant) {
		return nil, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return tr, err
}

// SupersedeGrace: a device's previous certificate is accepted on connections opened up to
// this long after a newer one was issued (the renewing device's own connections, opened
// before or while it renewed). A connection opened later with it is a second instance of
// the identity.
const SupersedeGrace = 30 * time.Second

type connStartKey struct{}

// WithConnStart records in a connection's context when the connection was accepted; the
// server sets it (http.Server.ConnContext) so that a superseded certificate can be told
// apart on an old connection of the device itself and on a new one of a clone.
func WithConnStart(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, connStartKey{}, t)
}

// ConnRestore returns what puts ctx's connection start (WithConnStart) into another
// context, or nil when ctx has none: a connection handed from one server to another
// (httpapi.Parking) keeps when it was first accepted.
func ConnRestore(ctx context.Context) func(context.Context) context.Context {
	t, ok := ctx.Value(connStartKey{}).(time.Time)
	if !ok {
		return nil
	}
	return func(ctx context.Context) context.Context { return WithConnStart(ctx, t) }
}

// connStart returns when the request's connection was accepted, or now when unknown.
func connStart(ctx context.Context, now time.Time) time.Time {
	if t, ok := ctx.Value(connStartKey{}).(time.Time); ok {
		return t
	}
	return now
}

// identityConflict raises the alert of a cloned device identity (ATTACKS row 1): a
// certificate the device's own later attestation superseded is still in use, so two
// instances hold the identity key. The request is refused; the conflict is counted
// (moat_device_identity_conflicts_total), logged, and written once per certificate to the
// tenant's audit log for support staff.
func (s *Service) identityConflict(ctx context.Context, dev device.Device, serial string) {
	s.metrics.conflicts.Inc()
	s.cfg.Logger.WarnContext(ctx, "device identity in use twice: a superseded certificate was presented",
		"device_id", dev.ID, "tenant_id", dev.TenantID, "serial", serial, "current_serial", dev.Certificate.Serial)
	s.mu.Lock()
	seen := s.conflicts[serial]
	s.conflicts[serial] = true
	if len(s.conflicts) > maxVerified {
		clear(s.conflicts)
	}
	s.mu.Unlock()
	if seen {
		return
	}
	now := s.cfg.Now().UTC()
	err := s.cfg.Store.InTx(context.WithoutCancel(ctx), func(tx store.Tx) error {
		tt, err := tx.ForTenant(dev.TenantID)
		if err != nil {
			return err
		}
		return tt.Audit().Append(ctx, audit.Event{
			ID: ident.New(audit.IDPrefix, now), TenantID: dev.TenantID, At: now,
			Action: "device.identity_conflict", ObjectType: "device", ObjectID: string(dev.ID),
			Detail: "certificate " + serial + " was presented after its successor " + dev.Certificate.Serial +
				" was issued: two devices hold this identity key (cloned key?)",
		})
	})
	if err != nil {
		s.cfg.Logger.ErrorContext(ctx, "record device identity conflict", "device_id", dev.ID, "err", err)
	}
}

// verified is a certificate chain checked once, reused until it must be checked again.
type verified struct {
	tenant, device string
	trust, root    [32]byte // the sums of the tenant's trusted CAs and of the root it was checked against
	until          time.Time
}

// maxVerified bounds the cache of verified chains (a replica serving more devices than
// this re-verifies some chains, which is correct, only slower).
const maxVerified = 1 << 17

// verifyChain verifies the leaf's chain to the root through the tenant's trusted CAs
// (deviceca.VerifyDevice), remembering the result for the same certificate bytes while the
// tenant's trusted CAs and the root are the same certificates (by their sums: a reload
// every trustTTL that finds the same CAs keeps it, a CA added, retired past its overlap or
// removed ends it), until the first of the leaf, its CAs and the root expires: two ECDSA
// verifications per request, and per device at every reload of its tenant's trust, are
// most of an update's authentication otherwise. Device state (blocked, claimed,
// certificate on record) is still checked on every request.
func (s *Service) verifyChain(leaf *x509.Certificate, tr *tenantTrust, root *x509.Certificate) (string, string, error) {
	now := s.cfg.Now()
	key := sha256.Sum256(leaf.Raw)
	rootSum := sha256.Sum256(root.Raw)
	s.mu.Lock()
	v, ok := s.verified[key]
	s.mu.Unlock()
	if ok && v.trust == tr.sum && v.root == rootSum && now.Before(v.until) && !now.Before(leaf.NotBefore) {
		return v.tenant, v.device, nil
	}
	tid, did, _, err := deviceca.VerifyDevice(leaf, tr.trusted, root, now)
	if err != nil {
		return "", "", err
	}
	until := leaf.NotAfter
	for _, t := range []time.Time{tr.notAfter, root.NotAfter} {
		if !t.IsZero() && t.Before(until) {
			until = t
		}
	}
	s.mu.Lock()
	if len(s.verified) >= maxVerified {
		clear(s.verified)
	}
	s.verified[key] = verified{tenant: tid, device: did, trust: tr.sum, root: rootSum, until: until}
	s.mu.Unlock()
	return tid, did, nil
}
