// Package sim is `moat sim`: many simulated devices in one process that speak the real
// device protocol, for the demo, load benchmarks and anyone evaluating moat.
//
// Each device is what a manufactured DW100 is to the service: an identity key (made in
// memory) that the platform operator registers, the tenant claims and puts in a device
// group; real attestation evidence (internal/attest) signed with that key, measuring the OS
// and app the device runs; mutual TLS with the certificate the service issues; the update
// long-poll (POST /device/updates); its signed assignment checked with the agent's own
// update client (internal/agent/update), and the assigned images downloaded and verified
// (signed hash, length and manifest) before they are discarded. Installing an image moves
// the device's in-memory slot to it and attests again with the new measurement. Update
// states (internal/updstate) and error reports go to the service as the agent sends them.
//
// What differs from a device, so that 10,000 fit in one process: slots, the anti-rollback
// state and the certificate live in memory (update.MemoryState), and the devices of the
// tenant share one verified view of its image repository (update.Repository) instead of
// each refreshing its own; a device's director checks (signature, device, tenant, expiry,
// counter) and floors stay its own. A device never gives up: every failure (a refused
// attestation, 503 with Retry-After, a lost connection) is retried after a capped
// exponential backoff with jitter, at least what Retry-After asked for.
//
// What it trusts: the server CAs of Config for both listeners, the tokens it is given, and
// the platform root pinned in Config.Root or, without one, the root the server serves at
// start (trusted on first use: the simulator is a load tool, not a device).
//
// Concurrency: New, then Run once; Stats is safe from any goroutine while Run runs.
package sim

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/update"
)

// Defaults and limits.
const (
	DefaultRamp  = 500 // devices started per second
	MaxDevices   = 1_000_000
	setupWorkers = 8 // concurrent registrations and group moves
	batchSize    = 500
)

// Config is what a simulation runs with. Fields without "optional" are required.
type Config struct {
	// ServerURL is the management API (registration, claims, groups), DeviceURL the device
	// API (attestation, mutual TLS): `moat server` prints both.
	ServerURL string
	DeviceURL string
	// ServerCAs is the only trust for both listeners' TLS certificates.
	ServerCAs *x509.CertPool
	// Token is a tenant Administrator's API token: it claims the devices, moves them into
	// the group and reads the tenant's repository.
	Token string
	// OperatorToken is a platform operator's API token: it registers the identity keys, as
	// the factory does for manufactured devices.
	OperatorToken string
	// Tenant, optional, is the tenant's ID or name; by default the token's only tenant.
	Tenant string
	// Product and Group name the product and device group (by names or IDs) the devices
	// are claimed into.
	Product string
	Group   string
	// Devices is how many devices to simulate.
	Devices int
	// Ramp, optional, is how many devices start per second (DefaultRamp).
	Ramp float64
	// OS and App, optional, are the target paths (os/NAME/VERSION, apps/NAME/VERSION) the
	// devices run at start. By default: the newest OS on the group's feed and the group's
	// current deployment (none if it has none).
	OS, App string
	// Root, optional, is the pinned platform root (1.root.json); by default the server's.
	Root []byte
	// CrashVersion and CrashPercent, optional: that percentage of the devices running app
	// version CrashVersion report an app_crash error report (the staged-rollout demo).
	CrashVersion string
	CrashPercent float64
	// Cloud, optional, is the tenant's cloud (`moat cloud`) the devices send telemetry to
	// (cloud.go); nil: none.
	Cloud *CloudConfig
	// WorkDir, optional, holds the shared verified TUF metadata (one directory for all the
	// devices); by default a temporary directory removed when Run returns.
	WorkDir string
	// Logger, optional, receives the simulator's events; nil discards them.
	Logger *slog.Logger
	// Now, optional, is the devices' clock (time.Now).
	Now func() time.Time
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.ServerURL == "" {
		errs = append(errs, errors.New("server_url: required"))
	}
	if c.DeviceURL == "" {
		errs = append(errs, errors.New("device_url: required"))
	}
	if c.ServerCAs == nil {
		errs = append(errs, errors.New("server_cas: required"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("token: required"))
	}
	if c.OperatorToken == "" {
		errs = append(errs, errors.New("operator_token: required (registering a device is the platform operator's)"))
	}
	if c.Product == "" {
		errs = append(errs, errors.New("product: required"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("group: required"))
	}
	if c.Devices < 1 || c.Devices > MaxDevices {
		errs = append(errs, fmt.Errorf("devices: must be 1 to %d, got %d", MaxDevices, c.Devices))
	}
	if c.Ramp < 0 {
		errs = append(errs, errors.New("ramp: must not be negative"))
	}
	if c.CrashPercent < 0 || c.CrashPercent > 100 {
		errs = append(errs, errors.New("crash_percent: must be 0 to 100"))
	}
	if (c.CrashVersion == "") != (c.CrashPercent == 0) {
		errs = append(errs, errors.New("crash_version and crash_percent: give both or neither"))
	}
	if c.Cloud != nil {
		errs = append(errs, c.Cloud.validate()...)
	}
	return errors.Join(errs...)
}

// Sim is one simulation.
type Sim struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	start time.Time

	mgmt  *client.Client // the Administrator
	op    *client.Client // the platform operator
	anon  *client.Client // attestation: no client certificate
	world world          // resolved at setup

	repo *update.Repository

	mu      sync.Mutex
	devices []*device
	held    map[string][]time.Time // per target: when each device held its verified assignment
	storm   storm

	counters
	cloud cloudCounters
}

// counters are the totals Stats reports.
type counters struct {
	registered, attestations, refusals, retries, unavailable atomic.Int64
	installs, statesSent, reportsSent, reportsDropped        atomic.Int64
}

// New validates cfg and returns a simulation; Run runs it.
func New(cfg Config) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sim config: %w", err)
	}
	if cfg.Ramp == 0 {
		cfg.Ramp = DefaultRamp
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Cloud = cfg.Cloud.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sim{cfg: cfg, log: log, now: cfg.Now, held: map[string][]time.Time{}}
	s.storm.wake, s.storm.end = context.WithCancel(context.Background())
	var err error
	mgmtHC := newHTTPClient(newSharedTransport(cfg.ServerCAs))
	if s.mgmt, err = client.New(cfg.ServerURL, client.WithHTTPClient(mgmtHC), client.WithToken(cfg.Token), client.WithUserAgent(userAgent)); err != nil {
		return nil, err
	}
	if s.op, err = client.New(cfg.ServerURL, client.WithHTTPClient(mgmtHC), client.WithToken(cfg.OperatorToken), client.WithUserAgent(userAgent)); err != nil {
		return nil, err
	}
	if s.anon, err = client.New(cfg.DeviceURL, client.WithHTTPClient(newHTTPClient(newSharedTransport(cfg.ServerCAs))), client.WithUserAgent(userAgent)); err != nil {
		return nil, err
	}
	return s, nil
}

// userAgent names the simulator in the server's access log.
const userAgent = "moat-sim/1"

// Run runs the simulation until ctx is done: it resolves the tenant, product, group and
// images, then registers, claims and moves the devices batch by batch and starts them at
// the ramp rate. It returns nil when ctx ends after the setup succeeded; the devices never
// give up, so a server that refuses or fails them only shows in Stats.
func (s *Sim) Run(ctx context.Context) error {
	s.start = s.now()
	if err := s.resolve(ctx); err != nil {
		return err
	}
	dir := s.cfg.WorkDir
	if dir == "" {
		d, err := os.MkdirTemp("", "moat-sim-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	base := s.cfg.DeviceURL + "/api/v1/device/tuf/"
	repo, err := update.NewRepository(update.RepositoryConfig{MetadataURL: base + "metadata/", TargetsURL: base + "targets/",
		Root: s.world.root, Dir: dir, MaxMetadataBytes: maxMetadataBytes})
	if err != nil {
		return err
	}
	s.repo = repo
	// A failed setup stops the devices already started.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	if err := s.populate(ctx, func(d *device) {
		wg.Go(func() { d.run(ctx) })
		if d.cloud != nil {
			wg.Go(func() { d.runCloud(ctx) })
		}
	}); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.log.InfoContext(ctx, "every simulated device started", "devices", s.cfg.Devices)
	<-ctx.Done()
	return nil
}

// maxMetadataBytes bounds every TUF file, as the agent does.
const maxMetadataBytes = 4 << 20

// Run runs a simulation of cfg until ctx is done and returns its final Stats.
func Run(ctx context.Context, cfg Config) (Stats, error) {
	s, err := New(cfg)
	if err != nil {
		return Stats{}, err
	}
	err = s.Run(ctx)
	return s.Stats(), err
}
