// Package agent is the device runtime, `moat agent`: it boots the verified OS and app slots
// (internal/agent/boot), proves what it booted to the security service and keeps its
// certificate (internal/agent/attestation), checks its update assignment (internal/agent/
// update), downloads assigned images into the inactive slot, switches to them, and commits a
// new image only once it proved healthy (an app reports healthy in time and does not
// crash-loop; an OS comes up and attests) or rolls it back. It supervises the one
// application as a separate process that reaches only the peripherals its manifest declares
// (internal/agent/periph), and queues error reports that reach the server once connected
// (internal/agent/errqueue).
//
// # Lifecycle
//
//	boot -> measure -> attest -> assignment -> download into the inactive slot (resumable,
//	verified while streaming) -> install (slot pending, N tries) -> restart the app, or
//	reboot through the launcher for an OS -> health check -> commit (floors raised), or
//	roll back and report
//
// Checks run at start, every CheckInterval (jittered by a fifth either way, so a fleet
// does not check in step), and whenever Nudge is called. A device whose attestation is
// refused only because its software is out of date (a fresh device with no image yet, an
// image revoked or below its floor) uses the recovery grant that comes with the refusal to
// fetch its assignment, installs it and attests again.
//
// # What it trusts and enforces
//
// It trusts the pinned platform root and the server CAs given in Config, its identity key,
// its state directory and its clock. It runs nothing that the boot package did not verify
// against the pinned root just before (the OS at launch, the app before every start), it
// installs only what both the director assigned and the offline keys signed (the update
// client), it commits an image only after its health check, and it raises anti-rollback
// floors only for committed images. A kill at any moment leaves the boot record on a
// verified image (the boot package's install order) and the error queue intact.
//
// Concurrency: Run runs the agent until its context ends; call it once. Nudge is safe from
// any goroutine.
package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/agent/cloudlink"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/image"
)

// Defaults.
const (
	DefaultCheckInterval = 5 * time.Minute
	DefaultHealthTimeout = 30 * time.Second
)

// Config is what `moat agent` is started with. Fields without "optional" are required.
type Config struct {
	// StateDir holds everything: slots, boot record, certificates, update state, queue.
	StateDir string
	// ServerURL is the security service, https://HOST[:PORT].
	ServerURL string
	// ServerCAs is the only trust for the server's TLS certificate.
	ServerCAs *x509.CertPool
	// Root is the pinned platform root, 1.root.json.
	Root []byte
	// Identity is the device's identity key.
	Identity identity.Signer
	// Backend is the device's peripherals (a simulated DW100, or Linux devices).
	Backend periph.Backend
	// Now is the device's clock.
	Now func() time.Time
	// Logger, optional, receives the agent's events; nil discards them.
	Logger *slog.Logger
	// CheckInterval, optional, is the time between assignment checks (DefaultCheckInterval).
	CheckInterval time.Duration
	// HealthTimeout, optional, is how long a new app has to report healthy.
	HealthTimeout time.Duration
	// Reboot, optional, is called when a new OS image is installed: it should restart the
	// device through the launcher (`moat boot`), which boots the new slot on trial. Nil
	// reboots in process: the agent runs the launcher's decision again itself.
	Reboot func() error
	// AppUID and AppGID, optional, are the unprivileged user the app runs as when the agent
	// runs as root; 0 means the agent's own.
	AppUID, AppGID int
	// Telemetry, optional, receives the app's telemetry instead of the cloud link (tests);
	// with neither, telemetry is dropped (logged at debug).
	Telemetry func(ctx context.Context, topic string, payload []byte) error
	// Cloud, optional, connects the app's telemetry and diagnostics to the tenant's cloud
	// (`moat cloud`) over MQTT with the device certificate (internal/agent/cloudlink).
	// It needs Product, the MQTT user name.
	Cloud *CloudConfig
	// Product, optional, is the device's product name, pinned at manufacture: the agent
	// installs no app signed for another product, whatever the director assigns.
	Product string
	// Launched says the launcher (`moat boot`) started the agent: it already chose the OS
	// slot, BootSlot ("" when it runs the factory agent), and the agent only verifies it.
	Launched bool
	BootSlot boot.Slot
	// Step, optional, is called at each step of an update ("downloaded", "installed",
	// "trial", "committed") before the agent goes on: the fault-injection tests kill the
	// agent there.
	Step func(step string)
}

// CloudConfig is the cloud link's part of Config.
type CloudConfig struct {
	// Broker is the cloud's MQTT listener, mqtts://HOST:PORT.
	Broker string
	// CAs are the only trust for the broker's TLS certificate.
	CAs *x509.CertPool
	// MaxQueueBytes and MaxQueueMessages, optional, bound what waits on disk while the
	// cloud is away (cloudlink.DefaultMaxQueueBytes, DefaultMaxQueueMessages).
	MaxQueueBytes    int64
	MaxQueueMessages int
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Cloud != nil && c.Product == "" {
		errs = append(errs, errors.New("product: required with a cloud (the MQTT user name)"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir: required"))
	}
	if c.ServerURL == "" {
		errs = append(errs, errors.New("server_url: required"))
	}
	if c.ServerCAs == nil {
		errs = append(errs, errors.New("server_cas: required"))
	}
	if len(c.Root) == 0 {
		errs = append(errs, errors.New("root: required"))
	}
	if c.Identity == nil {
		errs = append(errs, errors.New("identity: required"))
	}
	if c.Backend == nil {
		errs = append(errs, errors.New("backend: required"))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("now: required"))
	}
	if c.AppUID < 0 || c.AppGID < 0 || c.AppUID > 1<<31-1 || c.AppGID > 1<<31-1 {
		errs = append(errs, errors.New("app_uid and app_gid must be 0 to 2147483647"))
	}
	if c.CheckInterval < 0 || c.HealthTimeout < 0 {
		errs = append(errs, errors.New("check_interval and health_timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Agent is the device runtime.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	deviceID string
	slots    *boot.Slots
	reports  *reportQueue
	states   *updateStates // update steps for the service (updstates.go)
	nudge    chan struct{}

	appKick  chan struct{} // tells the supervisor a new app is installed
	sendKick chan struct{} // a report was queued: send it

	mu         sync.Mutex
	tenantID   string          // learned from the device API
	booted     bootState       // what this boot runs
	stale      bool            // what runs changed: attest again
	deniedSeen map[string]bool // capability denials already reported, per image
	sess       *session        // the current attestation session, for the watcher
	app        *periph.Server  // the running app's local API, for diagnostics
	link       *cloudlink.Link // nil without Config.Cloud

	deferral     *deferral             // the app's update deferral (install_gate.go)
	lastDeferred map[image.Kind]string // the deferral last reported, per kind
	wake         time.Time             // when a held update may install: check then

	noSandboxOnce sync.Once // NoSandboxWarning is logged once per agent
}

// NoSandboxWarning is what an agent logs, once, when its apps run without the sandbox.
const NoSandboxWarning = "the app runs as the agent's own user, without the sandbox: run the agent as root with --app-uid and --app-gid (docs/agent.md)"

// bootState is what the current boot runs: the OS chosen by the launcher and the app the
// supervisor last started.
type bootState struct {
	os  boot.Choice
	app boot.Choice
}

// New validates cfg and opens the state directory.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.HealthTimeout == 0 {
		cfg.HealthTimeout = DefaultHealthTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent state: %w", err)
	}
	slots, err := boot.New(boot.Config{StateDir: cfg.StateDir, Root: cfg.Root, Tries: boot.DefaultTries, MaxPayloadBytes: boot.DefaultMaxPayloadBytes})
	if err != nil {
		return nil, err
	}
	q, err := openReports(filepath.Join(cfg.StateDir, "errors"), cfg.Now, log)
	if err != nil {
		return nil, err
	}
	id := string(identity.IDFromPublicKey(cfg.Identity.Public()))
	states, err := openUpdateStates(filepath.Join(cfg.StateDir, "update-states"), cfg.Now, log)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log.With("device_id", id), deviceID: id, slots: slots, reports: q, states: states,
		nudge: make(chan struct{}, 1), appKick: make(chan struct{}, 1), sendKick: make(chan struct{}, 1),
		lastDeferred: map[image.Kind]string{}}
	if a.deferral, err = openDeferral(cfg.StateDir, cfg.Now, a.log, a.Nudge); err != nil {
		return nil, err
	}
	if cfg.Cloud != nil {
		if a.link, err = a.newLink(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Nudge asks for an assignment check now (a push from the server, or a test).
func (a *Agent) Nudge() {
	select {
	case a.nudge <- struct{}{}:
	default:
	}
}

// step tells Config.Step that the agent reached an update step.
func (a *Agent) step(name string) {
	if a.cfg.Step != nil {
		a.cfg.Step(name)
	}
}

// errReboot: a new OS is installed and the device must boot it.
var errReboot = errors.New("reboot into the new OS")

// Run runs the agent until ctx is done: boot, then the check loop and the app supervisor.
// A new OS image reboots through Config.Reboot, or in process.
func (a *Agent) Run(ctx context.Context) error {
	if a.link != nil {
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = a.link.Run(lctx) // returns nil when lctx ends
		}()
		defer func() { cancel(); <-done }()
	}
	for {
		err := a.runBoot(ctx)
		if !errors.Is(err, errReboot) {
			return err
		}
		if a.cfg.Reboot != nil {
			return a.cfg.Reboot()
		}
		a.log.InfoContext(ctx, "rebooting in process into the new OS")
	}
}

// runBoot is one boot: the launcher's decision, then checks and the app until ctx ends or
// a new OS needs a reboot.
func (a *Agent) runBoot(ctx context.Context) error {
	var dec boot.Decision
	var first *boot.Choice // the launcher's app choice: the supervisor's first start
	if a.cfg.Launched {
		// `moat boot` chose and verified the OS slot (using up a try if it is on trial);
		// the agent verifies what it runs without choosing again.
		if a.cfg.BootSlot != "" {
			c, err := a.slots.Running(image.KindOS, a.cfg.BootSlot)
			if err != nil {
				return fmt.Errorf("boot: the OS slot the launcher chose: %w", err)
			}
			dec.OS = c
		}
	} else {
		before, _ := a.slots.Record()
		var err error
		dec, err = a.slots.Launch()
		if err == nil {
			a.reportRollback(image.KindOS, before, dec.OS)
			if dec.AppErr == nil {
				a.reportRollback(image.KindApp, before, dec.App)
				if dec.App.Slot != "" {
					first = &dec.App
				}
			}
		}
		for _, r := range dec.Rejected {
			a.report(rejectedReport(before, r, errreport.StepBoot, "slot_rejected"))
		}
		switch {
		case errors.Is(err, boot.ErrNoImage):
			// A fresh device: no OS slot yet. It attests with nothing measured and installs
			// what the recovery grant lets it fetch.
			a.log.InfoContext(ctx, "no verified OS slot: running as installed at the factory")
		case err != nil:
			return fmt.Errorf("boot: %w", err)
		}
	}
	a.mu.Lock()
	a.booted = bootState{os: dec.OS}
	a.mu.Unlock()

	bootCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { a.superviseApp(bootCtx, first) })
	wg.Go(func() { a.watch(bootCtx) })
	err := a.checkLoop(bootCtx)
	cancel()
	wg.Wait()
	return err
}

// checkLoop checks the assignment at start, every jittered CheckInterval and on a nudge.
func (a *Agent) checkLoop(ctx context.Context) error {
	s, err := a.newSession()
	if err != nil {
		return err
	}
	a.setSession(s)
	retry := minRetry
	for {
		a.mu.Lock()
		stale := a.stale
		a.stale = false
		a.mu.Unlock()
		if stale {
			if s, err = a.newSession(); err != nil {
				return err
			}
			a.setSession(s)
		}
		wait := jitter(a.cfg.CheckInterval)
		if err := a.check(ctx, s); errors.Is(err, errReboot) {
			return err
		} else if err != nil && ctx.Err() == nil {
			a.log.WarnContext(ctx, "assignment check failed", "err", err, "retry_in", retry)
			wait, retry = min(wait, retry), min(2*retry, maxRetry)
		} else {
			retry = minRetry
		}
		if w := a.nextWake(); w > 0 {
			wait = min(wait, w) // a held update may install then (install_gate.go)
		}
		a.sendReports(ctx, s)
		if !a.wait(ctx, s, wait) {
			return nil
		}
	}
}

// wait waits for the next check: d, or a nudge; queued reports are sent meanwhile. It
// reports false when ctx is done.
func (a *Agent) wait(ctx context.Context, s *session, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-a.nudge:
			return true
		case <-t.C:
			return true
		case <-a.sendKick:
			a.sendReports(ctx, s)
		}
	}
}

// A failed check is retried sooner than the interval: after minRetry, doubling to maxRetry.
const (
	minRetry = 2 * time.Second
	maxRetry = 5 * time.Minute
)

// jitter spreads d by a fifth either way.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1)) //nolint:gosec // G404: spreading check times needs no secret randomness
}

func clip(s string) string {
	if len(s) > errreport.MaxMessageBytes {
		return s[:errreport.MaxMessageBytes]
	}
	return s
}

// report queues an error report; a report the queue refuses is logged instead.
func (a *Agent) report(r errreport.Report) {
	r.At = a.cfg.Now().UTC().Truncate(time.Second)
	if r.ID == "" {
		r.ID = errreport.NewID(r.At)
	}
	if err := a.reports.Put(r); err != nil {
		a.log.Error("queue error report", "kind", r.Kind, "err", err)
		return
	}
	select {
	case a.sendKick <- struct{}{}:
	default:
	}
}

// rejectedReport is the report of a slot the boot package refused to run. It names the image
// the boot record says the slot holds (a report's target is an image path, or the queue and
// the server refuse it: ATTACKS row 23, attacked by
// TestAgent_CorruptTrustAnchorFailsClosedAndReports); a slot the record names no image for
// failed verification before any image was known, a verify step without a target.
func rejectedReport(rec boot.Record, r boot.Rejection, step errreport.Step, code string) errreport.Report {
	st := rec.App
	if r.Kind == image.KindOS {
		st = rec.OS
	}
	rep := errreport.Report{Kind: errreport.UpdateFailed, Step: step, Code: code, Target: st.Images[r.Slot].Path,
		Message: clip(fmt.Sprintf("slot %s-%s: %v", r.Kind, r.Slot, r.Err))}
	if rep.Target == "" {
		rep.Step = errreport.StepVerify
	}
	return rep
}

// updateConfig is the update client's configuration for an HTTP client (a certificate's, or
// a recovery grant's).
func (a *Agent) updateConfig(tenant string) update.Config {
	base := a.cfg.ServerURL + "/api/v1/device/tuf/"
	dk, _ := update.DirectorKeyFromRoot(a.cfg.Root)
	return update.Config{
		MetadataURL: base + "metadata/", TargetsURL: base + "targets/", Root: a.cfg.Root, DirectorKey: dk,
		DeviceID: a.deviceID, TenantID: tenant, StateDir: filepath.Join(a.cfg.StateDir, "update"),
		Now: a.cfg.Now, FetchOptions: fetchOptions, MaxMetadataBytes: 4 << 20, Product: a.cfg.Product,
		Progress: a.onProgress,
	}
}

func (a *Agent) setSession(s *session) {
	a.mu.Lock()
	a.sess = s
	a.mu.Unlock()
	if a.link != nil {
		a.link.Kick() // a new session attests anew: the link presents its certificate
	}
}

// watch long-polls the service for a change of what this device should run and nudges a
// check as soon as one comes: updates in seconds rather than at the next interval. It waits
// only while the device holds a certificate; failures back off from 5 s to a minute.
func (a *Agent) watch(ctx context.Context) {
	var since string
	backoff := watchMinBackoff
	for ctx.Err() == nil {
		a.mu.Lock()
		s := a.sess
		a.mu.Unlock()
		var err error
		if s != nil {
			_, err = s.att.Certificate(ctx)
		}
		if s != nil && err == nil {
			var u client.Updates
			u, err = s.att.API().WaitForUpdates(ctx, client.UpdatesWait{Since: since})
			if err == nil {
				// The first answer is a change too: something may have changed between the
				// last check and this wait, and a check too many costs little.
				if u.Changed {
					a.log.InfoContext(ctx, "the service says what this device should run changed: checking now")
					a.Nudge()
				}
				since, backoff = u.Generation, watchMinBackoff
				continue
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, watchMaxBackoff)
	}
}

// The watcher's backoff after a failed wait (or while the device has no certificate).
const (
	watchMinBackoff = 5 * time.Second
	watchMaxBackoff = time.Minute
)
