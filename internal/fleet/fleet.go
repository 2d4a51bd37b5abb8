// Package fleet is the security service's device side: it gives devices attestation nonces,
// verifies their evidence against the device registry and the image catalog, issues their
// short-lived certificates from the tenant's device CA, authenticates them on the device
// API by those certificates, and computes each device's signed update assignment (the
// director).
//
// What it trusts: the store (registry, CAs, deployments), the image catalog of
// internal/repo (images the offline keys signed and nobody revoked), the platform root
// certificate the operator uploaded, and its own keys: the key-encryption key that unwraps
// tenant CA keys and the online key that signs assignments.
//
// What it enforces (DESIGN rule 1): a certificate only for a registered, claimed, unblocked
// device whose evidence carries its identity key's signature over a nonce issued to it and
// never used, and whose every measured image is in the catalog with the measured hash and
// versions, for its product, not below the device's anti-rollback floors, and not in
// development mode without the development capability (TestAttest_Refusals names each
// reason). A refusal tells the caller only "refused"; the reason is counted in
// moat_attestation_refusals_total, logged, and recorded on the device for support staff
// once the evidence's signature is the device's (a forged claim cannot rewrite a device's
// record). On the device API a device is identified only by a certificate that chains to a
// CA of its own tenant trusted now, that the server recorded as issued, for a device that is
// still claimed by that tenant and not blocked, checked on every request against the
// device's row as stored, or as cached until a change event for the device or its tenant
// (devcache.go; rule 3; TestAuthenticate_*, TestDeviceCache_*). Assignments name only images in the catalog at or above the device's
// floors (rule 2: the device checks them against TUF again), whatever Config.Policy chooses.
//
// Layout. Parts that need none of the service's state are sub-packages:
//   - assign: which images a device is assigned, from its inputs, through a Policy (the seam
//     for rollouts; assign.Default without one), and the vetting of any policy's choice;
//   - nonce: the stateless attestation nonces and their per-device request budgets;
//   - push: the devices long-polling for updates, their bounds and wake-ups.
//
// Attestation (attest.go), the tenant CAs (ca.go), device authentication (authn.go) and
// recovery grants (recovery.go) stay here: they share the trust caches (a tenant's CA
// certificates and keys, the platform root, recently verified chains, under one mutex) and
// their invalidation on a CA change, attestation issues its certificate with the CA's
// cached key and hands out a recovery grant within its refusal, and authentication accepts
// those grants; split apart, they would need that state exported.
// The assignment's and the generation's store reads (assignment.go, updates.go) stay here
// too, so assign and push never see the store.
//
// Attestation runs at the crypto limit (issue 15): the evidence's signature is verified
// once and the certificate signed once, in the caller's goroutine; what must be durable
// (the spent nonce, the certificate record, the device's new state) is one write, which
// concurrent attestations commit together (batch.go: a bounded queue, ErrBusy past it);
// nonces spent through a replica are remembered in memory (spent.go) in front of the
// store's record, which decides; parsed device keys (devkeys.go) and each tenant CA's
// signer (ca.go) are cached. Update checks run at the TLS limit: an unchanged device is
// authenticated from its cached row (devcache.go) and answered 304 from its cached
// assignment (cache.go), with no store read.
//
// A Service is safe for concurrent use: its caches take one mutex, the assignment counter
// is atomic, and the sub-packages' types are safe for concurrent use.
package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/fleet/assign"
	"github.com/moat-iot/moat/internal/fleet/nonce"
	"github.com/moat-iot/moat/internal/fleet/push"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Defaults.
const (
	DefaultCertLifetime = 24 * time.Hour
	AssignmentTTL       = time.Hour
	// CAValidity is how long the platform root certifies a tenant CA (moat platform
	// ca-sign) and CAOverlap how long a replaced CA stays trusted after a rotation.
	CAValidity = 5 * 365 * 24 * time.Hour
	CAOverlap  = 7 * 24 * time.Hour
	// trustTTL bounds how long a replica uses cached CA certificates and keys.
	trustTTL = 30 * time.Second
)

// Errors callers branch on.
var (
	// ErrRefused: attestation refused; the Refusal says why (never shown to the caller).
	ErrRefused = errors.New("attestation refused")
	// ErrUnauthenticated: no valid device certificate, or the device may not connect now.
	ErrUnauthenticated = errors.New("device not authenticated")
	// ErrNoPlatformCA: the platform root certificate has not been uploaded yet.
	ErrNoPlatformCA = errors.New("the platform has no root certificate yet (moat platform init)")
	// ErrBadCA: an uploaded CA certificate does not certify the pending CA.
	ErrBadCA = errors.New("CA certificate does not certify the pending CA")
)

// Config holds a Service's dependencies; all but CertLifetime, Policy and MaxWaiters are required.
type Config struct {
	Store  store.Store
	Repo   *repo.Service
	Logger *slog.Logger
	Now    func() time.Time
	// KEK is the 32-byte key-encryption key that wraps tenant CA private keys at rest.
	KEK []byte
	// Director is the online key that signs update assignments.
	Director     *ecdsa.PrivateKey
	Registerer   prometheus.Registerer
	CertLifetime time.Duration
	// NoncesPerMinute is how many attestation nonces each device ID may ask for per minute
	// on this replica; 0 means nonce.PerWindow (10).
	NoncesPerMinute int
	// Policy chooses the images each device is assigned (the seam for rollouts); nil is
	// assign.Default. The catalog and the device's floors bound what it may choose.
	Policy assign.Policy
	// MaxWaiters bounds the devices waiting for updates at once on this replica (one wait
	// each); 0 is DefaultMaxWaiters. Each holds a connection and a goroutine.
	MaxWaiters int
	// Broadcast, when set, is told of every Notify after this replica's waiters were
	// woken, so that the other replicas wake theirs (internal/server wires it to
	// PostgreSQL NOTIFY); they call WakeLocal. Nil for a single process (SQLite). It must
	// not block.
	Broadcast func(tenant.ID)
	// AttestQueue bounds the attestation writes waiting for their shared commit on this
	// replica; past it an attestation is turned away with ErrBusy (503, Retry-After).
	// AttestBatch is the most writes one commit carries, AttestBatchWait the longest a
	// batch waits for attestations still being verified (a lone one never waits). Zero
	// means DefaultAttestQueue, DefaultAttestBatch, DefaultAttestBatchWait; a negative
	// AttestBatchWait means no wait.
	AttestQueue     int
	AttestBatch     int
	AttestBatchWait time.Duration
	// AssignmentCacheEntries bounds the devices whose last signed assignment this replica
	// remembers to answer their update checks "not modified" (cache.go); 0 is
	// DefaultAssignmentCacheEntries.
	AssignmentCacheEntries int
	// DeviceCacheEntries bounds the devices whose rows this replica keeps to authenticate
	// their next requests without a store read (devcache.go); 0 is
	// DefaultDeviceCacheEntries.
	DeviceCacheEntries int
	// BroadcastDevice, when set, is told of every device whose row this replica changed
	// outside the management API (an attestation), so that the other replicas end their
	// cached copy of it (they call DeviceChangedLocal). Nil for a single process. It must
	// not block.
	BroadcastDevice func(device.ID)
}

// Service is the device side of the security service.
type Service struct {
	cfg     Config
	metrics metrics
	counter atomic.Uint64 // last assignment counter issued by this process

	nonces  *nonce.Issuer // attestation nonces and their request budgets
	spent   *spentSet     // nonces spent through this replica, in front of the store's record
	commits *committer    // group commit of attestation writes
	devKeys *deviceKeys   // parsed device identity keys
	cpu     chan struct{} // one token per CPU for attestations' crypto (attempt.workOut)

	waits *push.Waits // devices waiting for updates

	cache   *assignmentCache                                  // the assignment signed for each device last (cache.go)
	devices *deviceCache                                      // device rows read for authentication (devcache.go)
	memo    *inputsMemo                                       // the groups' and tenants' assignment inputs (memo.go)
	readOne func(context.Context, func(store.Tx) error) error // store.OneRead

	mu        sync.Mutex
	trust     map[tenant.ID]*tenantTrust // cached CA certificates and keys, at most maxTrust
	untrusted map[tenant.ID]time.Time    // tenant IDs with no trusted CA, when looked up; at most maxUntrusted
	root      cachedRoot
	verified  map[[32]byte]verified // chains verified recently, by SHA-256 of the leaf
	conflicts map[string]bool       // serials already reported as identity conflicts
}

type metrics struct {
	attestations *prometheus.CounterVec // result: issued | refused
	refusals     *prometheus.CounterVec // reason
	authFailures prometheus.Counter
	assignments  prometheus.Counter
	notModified  prometheus.Counter
	conflicts    prometheus.Counter
}

// New returns the service.
func New(cfg Config) (*Service, error) {
	var errs []error
	if cfg.Store == nil || cfg.Repo == nil || cfg.Logger == nil || cfg.Now == nil || cfg.Registerer == nil {
		errs = append(errs, errors.New("fleet: Store, Repo, Logger, Now and Registerer are required"))
	}
	if len(cfg.KEK) != 32 {
		errs = append(errs, errors.New("fleet: KEK must be 32 bytes"))
	}
	if cfg.Director == nil {
		errs = append(errs, errors.New("fleet: Director key is required"))
	}
	if cfg.CertLifetime == 0 {
		cfg.CertLifetime = DefaultCertLifetime
	}
	if cfg.MaxWaiters == 0 {
		cfg.MaxWaiters = DefaultMaxWaiters
	}
	if cfg.AttestQueue == 0 {
		cfg.AttestQueue = DefaultAttestQueue
	}
	if cfg.AttestBatch == 0 {
		cfg.AttestBatch = DefaultAttestBatch
	}
	if cfg.AttestBatchWait == 0 {
		cfg.AttestBatchWait = DefaultAttestBatchWait
	}
	if cfg.AttestQueue < 0 || cfg.AttestBatch < 0 {
		errs = append(errs, fmt.Errorf("fleet: AttestQueue %d and AttestBatch %d must not be negative", cfg.AttestQueue, cfg.AttestBatch))
	}
	if cfg.MaxWaiters < 0 {
		errs = append(errs, fmt.Errorf("fleet: MaxWaiters %d is negative", cfg.MaxWaiters))
	}
	if cfg.AssignmentCacheEntries == 0 {
		cfg.AssignmentCacheEntries = DefaultAssignmentCacheEntries
	}
	if cfg.AssignmentCacheEntries < 0 {
		errs = append(errs, fmt.Errorf("fleet: AssignmentCacheEntries %d is negative", cfg.AssignmentCacheEntries))
	}
	if cfg.DeviceCacheEntries == 0 {
		cfg.DeviceCacheEntries = DefaultDeviceCacheEntries
	}
	if cfg.DeviceCacheEntries < 0 {
		errs = append(errs, fmt.Errorf("fleet: DeviceCacheEntries %d is negative", cfg.DeviceCacheEntries))
	}
	if cfg.CertLifetime < 5*time.Minute || cfg.CertLifetime > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("fleet: certificate lifetime %s outside 5m..720h", cfg.CertLifetime))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, trust: map[tenant.ID]*tenantTrust{}, untrusted: map[tenant.ID]time.Time{}, verified: map[[32]byte]verified{}, conflicts: map[string]bool{},
		cache: newAssignmentCache(cfg.AssignmentCacheEntries)}
	s.devices = newDeviceCache(cfg.DeviceCacheEntries, s.cache)
	s.memo = newInputsMemo(s.cache)
	s.readOne = store.OneRead(cfg.Store)
	var err error
	if s.nonces, err = nonce.NewIssuer(cfg.KEK); err != nil {
		return nil, err
	}
	s.nonces.SetPerWindow(cfg.NoncesPerMinute)
	s.spent = newSpentSet(maxSpent)
	s.commits = newCommitter(cfg.Store, cfg.AttestQueue, cfg.AttestBatch, max(cfg.AttestBatchWait, 0))
	s.devKeys = newDeviceKeys(maxDeviceKeys)
	s.cpu = make(chan struct{}, runtime.GOMAXPROCS(0))
	s.metrics = metrics{
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_attestations_total", Help: "Attestations by result (issued, refused)."}, []string{"result"}),
		refusals:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_attestation_refusals_total", Help: "Refused attestations by reason."}, []string{"reason"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_device_auth_failures_total", Help: "Device API requests refused for want of a valid device certificate."}),
		assignments:  prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_assignments_total", Help: "Update assignments signed."}),
		notModified:  prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_assignment_not_modified_total", Help: "Update checks answered 304: the device holds the current assignment."}),
		conflicts:    prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_device_identity_conflicts_total", Help: "Superseded device certificates presented: one identity key in use on two devices."}),
	}
	for _, r := range device.RefusalReasons {
		s.metrics.refusals.WithLabelValues(r)
	}
	s.metrics.attestations.WithLabelValues("issued")
	s.metrics.attestations.WithLabelValues("refused")
	for _, c := range []prometheus.Collector{s.metrics.attestations, s.metrics.refusals, s.metrics.authFailures, s.metrics.assignments, s.metrics.notModified, s.metrics.conflicts} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("fleet: register metrics: %w", err)
		}
	}
	if s.waits, err = push.New(cfg.MaxWaiters, cfg.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

// DirectorKey is the public key devices verify assignments with.
func (s *Service) DirectorKey() *ecdsa.PublicKey { return &s.cfg.Director.PublicKey }

type cachedRoot struct {
	cert   *x509.Certificate
	pem    string
	loaded time.Time
	sum    [32]byte // SHA-256 of cert's DER (authn.go, verifyChain)
}

// rootCert returns the platform root certificate (cached for trustTTL).
func (s *Service) rootCert(ctx context.Context) (*x509.Certificate, string, error) {
	now := s.cfg.Now()
	s.mu.Lock()
	r := s.root
	s.mu.Unlock()
	if r.cert != nil && now.Sub(r.loaded) < trustTTL {
		return r.cert, r.pem, nil
	}
	var pemText string
	err := s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		var err error
		pemText, err = tx.PlatformCA().Get(ctx)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", ErrNoPlatformCA
	}
	if err != nil {
		return nil, "", err
	}
	cert, err := deviceca.ParseRootCertificate([]byte(pemText))
	if err != nil {
		return nil, "", fmt.Errorf("stored platform root certificate: %w", err)
	}
	s.mu.Lock()
	s.root = cachedRoot{cert: cert, pem: pemText, loaded: now, sum: sha256.Sum256(cert.Raw)}
	s.mu.Unlock()
	return cert, pemText, nil
}

// ForgetRoot drops the cached platform root certificate (after an upload on this replica).
func (s *Service) ForgetRoot() {
	s.mu.Lock()
	s.root = cachedRoot{}
	s.mu.Unlock()
}

// CheckRoot checks a platform root certificate before it is stored: a self-signed P-256 CA
// whose key is one of the root-role keys of the platform's current TUF root, so that only
// the holder of the offline root key can make one (a stolen operator token cannot install
// a CA root of its own), and, when one is stored already, with the same key (renewal; a
// new key would orphan every tenant CA).
func (s *Service) CheckRoot(ctx context.Context, certPEM []byte) error {
	cert, err := deviceca.ParseRootCertificate(certPEM)
	if err != nil {
		return err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return errors.New("the certificate key is not ECDSA")
	}
	var roots [][]byte
	var current string
	err = s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		var err error
		if roots, err = tx.PlatformRoots().List(ctx); err != nil {
			return err
		}
		current, err = tx.PlatformCA().Get(ctx)
		if errors.Is(err, store.ErrNotFound) {
			err = nil
		}
		return err
	})
	if err != nil {
		return err
	}
	if len(roots) == 0 {
		return errors.New("upload the platform root.json first (moat platform init)")
	}
	root, err := metadata.Root().FromBytes(roots[len(roots)-1])
	if err != nil {
		return fmt.Errorf("stored platform root: %w", err)
	}
	role, ok := root.Signed.Roles[metadata.ROOT]
	if !ok || !slices.Contains(role.KeyIDs, keys.KeyID(pub)) {
		return errors.New("the certificate's key is not a root key of the platform's TUF root")
	}
	if current != "" {
		old, err := deviceca.ParseRootCertificate([]byte(current))
		if err == nil && !old.PublicKey.(*ecdsa.PublicKey).Equal(pub) {
			return errors.New("the certificate has another key than the stored platform root certificate")
		}
	}
	return nil
}
