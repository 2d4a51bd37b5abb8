// Package agentcmd is the command line of the device runtime: `agent` (run the runtime)
// and `boot` (the launcher), shared by the full `moat` binary and the slim device build
// `moat-agent`, which links nothing of the server, the cloud or the management CLI
// (TestSlimBuild_LinksNoServerPackage).
package agentcmd

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/agent/errqueue"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/identity"
)

// ExitReboot is the agent's exit status when it installed a new OS: the launcher then
// chooses and verifies the OS slot again and starts it.
const ExitReboot = 75

// Usage texts.
const (
	AgentUsage = `moat agent --state DIR --server URL --identity FILE --root FILE --server-ca FILE [flags]

Runs the device runtime: boots the verified OS and app slots of DIR, attests to the
security service with the identity key, installs the images the director assigns (into the
inactive slot, committed only after a health check, rolled back otherwise), runs the one
application with the peripherals its manifest declares, and sends error reports.

Everything lives under DIR: slots, boot record (boot.json), certificates, update state,
error queue, cloud outbox. FILE arguments are read at start; the identity key must be
mode 0600. With --cloud the app's telemetry and the cloud's diagnostics requests travel
over MQTT with the device certificate (docs/agent.md).

EXAMPLES
  moat agent --state /var/lib/moat --server https://moat.example:8444 --identity /var/lib/moat/identity.key --root /etc/moat/1.root.json --server-ca /etc/moat/server-ca.pem`
	BootUsage = `moat boot --state DIR --root FILE -- AGENT-FLAGS...

The launcher: chooses the OS slot from DIR's boot record (a new image on trial uses up one
of its tries), verifies the slot's image against the pinned root before executing it, and
falls back to the other slot when it is bad or out of tries. It runs the slot's
bin/moat-agent with "agent" and the flags after --, and chooses again when the agent exits
with status 75 (a new OS was installed). Without a verified OS slot it runs the agent it
is itself (the factory image).

EXAMPLES
  moat boot --state /var/lib/moat --root /etc/moat/1.root.json -- --server https://moat.example:8444 --identity /var/lib/moat/identity.key --server-ca /etc/moat/server-ca.pem`
)

// Flags are the agent's settings.
type Flags struct {
	State, Server, Identity, Root, ServerCA, Peripherals, PeripheralsConfig, Product string
	Cloud, CloudCA                                                                   string
	HeaterFault                                                                      string
	HeaterFaultAfter                                                                 time.Duration
	CheckInterval, HealthTimeout                                                     time.Duration
	AppUID, AppGID                                                                   int
	LogLevel                                                                         string
}

// Register adds the agent's flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.State, "state", "", "state `DIR` (required)")
	fs.StringVar(&f.Server, "server", "", "security service device API `URL` (moat server --device-addr), https://HOST[:PORT] (required)")
	fs.StringVar(&f.Identity, "identity", "", "identity key `FILE` (PKCS#8, mode 0600; required)")
	fs.StringVar(&f.Root, "root", "", "pinned platform root `FILE`, 1.root.json (required)")
	fs.StringVar(&f.ServerCA, "server-ca", "", "PEM `FILE` of the CAs trusted for the server's TLS certificate (required)")
	fs.StringVar(&f.Product, "product", "", "the device's product `NAME` (pinned at manufacture): apps signed for another product are refused")
	fs.StringVar(&f.Cloud, "cloud", "", "the tenant's cloud (moat cloud) MQTT `URL`, mqtts://HOST:PORT: the app's telemetry and diagnostics go there with the device certificate (needs --product and --cloud-ca; without it telemetry is dropped)")
	fs.StringVar(&f.CloudCA, "cloud-ca", "", "PEM `FILE` of the CAs trusted for the cloud's TLS certificate (with --cloud)")
	fs.StringVar(&f.Peripherals, "peripherals", "dw100", "peripheral backend: dw100 (simulated DW100 dishwasher), simulated, or linux (the board's devices, with --peripherals-config)")
	fs.StringVar(&f.PeripheralsConfig, "peripherals-config", "", "JSON `FILE` mapping manifest peripherals to the board's devices, for --peripherals linux (docs/app-sdk.md)")
	fs.StringVar(&f.HeaterFault, "dw100-heater-fault", "", "for --peripherals dw100: make the simulated heater fail, dead (the drying air stays cool) or runaway (it heats even when off), so the cloud's rules and the heater self-test have a fault to find")
	fs.DurationVar(&f.HeaterFaultAfter, "dw100-heater-fault-after", 0, "with --dw100-heater-fault: the heater works this long first, then develops the fault")
	fs.DurationVar(&f.CheckInterval, "check-interval", agent.DefaultCheckInterval, "time between assignment checks (jittered by a fifth)")
	fs.DurationVar(&f.HealthTimeout, "health-timeout", agent.DefaultHealthTimeout, "how long a new app has to report healthy")
	fs.IntVar(&f.AppUID, "app-uid", 0, "unprivileged `UID` the app runs as, in the sandbox, when the agent runs as root (with --app-gid; 0: no sandbox)")
	fs.IntVar(&f.AppGID, "app-gid", 0, "`GID` the app runs as with --app-uid")
	fs.StringVar(&f.LogLevel, "log-level", "info", "debug, info, warn or error")
}

// heaterFault reads --dw100-heater-fault and --dw100-heater-fault-after.
func heaterFault(s string, after time.Duration) (periph.HeaterFault, error) {
	if after < 0 {
		return 0, fmt.Errorf("--dw100-heater-fault-after: %s, want 0 or more", after)
	}
	switch s {
	case "", "none":
		return periph.HeaterWorking, nil
	case "dead":
		return periph.HeaterDead, nil
	case "runaway":
		return periph.HeaterRunaway, nil
	}
	return 0, fmt.Errorf("--dw100-heater-fault: %q, want dead or runaway", s)
}

// Config turns the flags into the agent's configuration.
func (f *Flags) Config(stderr io.Writer) (agent.Config, error) {
	var errs []error
	for name, v := range map[string]string{"--state": f.State, "--server": f.Server, "--identity": f.Identity, "--root": f.Root, "--server-ca": f.ServerCA} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return agent.Config{}, err
	}
	key, err := identity.OpenFileKey(f.Identity)
	if err != nil {
		return agent.Config{}, fmt.Errorf("--identity: %w", err)
	}
	root, err := os.ReadFile(f.Root)
	if err != nil {
		return agent.Config{}, fmt.Errorf("--root: %w", err)
	}
	caPEM, err := os.ReadFile(f.ServerCA)
	if err != nil {
		return agent.Config{}, fmt.Errorf("--server-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return agent.Config{}, fmt.Errorf("--server-ca: %s holds no PEM certificate", f.ServerCA)
	}
	if f.HeaterFault != "" && f.Peripherals != "dw100" {
		return agent.Config{}, fmt.Errorf("--dw100-heater-fault: only with --peripherals dw100, not %q", f.Peripherals)
	}
	var backend periph.Backend
	switch f.Peripherals {
	case "dw100":
		d := periph.NewDW100()
		d.RealTime(time.Now) // the heater warms the water as the app runs it
		fault, err := heaterFault(f.HeaterFault, f.HeaterFaultAfter)
		if err != nil {
			return agent.Config{}, err
		}
		if fault != periph.HeaterWorking {
			// A fault the simulated machine develops: the process lives as long as the
			// agent, so the timer needs no stopping.
			time.AfterFunc(f.HeaterFaultAfter, func() { d.SetHeaterFault(fault) })
		}
		backend = d
	case "simulated":
		backend = periph.NewSimulated()
	case "linux":
		b, err := linuxBackend(f.PeripheralsConfig)
		if err != nil {
			return agent.Config{}, fmt.Errorf("--peripherals-config: %w", err)
		}
		backend = b
	default:
		return agent.Config{}, fmt.Errorf("--peripherals: %q, want dw100, simulated or linux", f.Peripherals)
	}
	cloud, err := f.cloudConfig()
	if err != nil {
		return agent.Config{}, err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return agent.Config{}, fmt.Errorf("--log-level: %w", err)
	}
	return agent.Config{
		StateDir: f.State, ServerURL: strings.TrimRight(f.Server, "/"), ServerCAs: pool, Root: root, Identity: key,
		Backend: backend, Now: time.Now, CheckInterval: f.CheckInterval, HealthTimeout: f.HealthTimeout,
		AppUID: f.AppUID, AppGID: f.AppGID, Product: f.Product, Cloud: cloud,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv})),
	}, nil
}

// cloudConfig is the cloud link's configuration: nil without --cloud.
func (f *Flags) cloudConfig() (*agent.CloudConfig, error) {
	switch {
	case f.Cloud == "" && f.CloudCA == "":
		return nil, nil
	case f.Cloud == "":
		return nil, errors.New("--cloud-ca: needs --cloud")
	case f.CloudCA == "":
		return nil, errors.New("--cloud: needs --cloud-ca")
	case f.Product == "":
		return nil, errors.New("--cloud: needs --product (the MQTT user name)")
	}
	pem, err := os.ReadFile(f.CloudCA)
	if err != nil {
		return nil, fmt.Errorf("--cloud-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--cloud-ca: %s holds no PEM certificate", f.CloudCA)
	}
	return &agent.CloudConfig{Broker: f.Cloud, CAs: pool}, nil
}

// linuxBackend reads the board's peripheral map (periph.LinuxConfig as JSON, strictly).
func linuxBackend(path string) (*periph.Linux, error) {
	if path == "" {
		return nil, errors.New("required with --peripherals linux")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg periph.LinuxConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return periph.NewLinux(cfg)
}

// errExitReboot makes RunAgent's caller exit with ExitReboot.
var errExitReboot = errors.New("a new OS is installed: reboot through the launcher")

// IsReboot reports whether err asks the process to exit with ExitReboot.
func IsReboot(err error) bool { return errors.Is(err, errExitReboot) }

// RunAgent runs `agent` with args until ctx is done. A new OS makes it return an error for
// which IsReboot is true, when launched by `boot` (MOAT_LAUNCHED=1); otherwise it reboots
// in process.
func RunAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("moat agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, AgentUsage); fs.PrintDefaults() }
	var f Flags
	f.Register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("agent takes no arguments, got %q", fs.Arg(0))
	}
	return Run(ctx, f, stderr)
}

// Run runs the agent with parsed flags; see RunAgent.
func Run(ctx context.Context, f Flags, stderr io.Writer) error {
	cfg, err := f.Config(stderr)
	if err != nil {
		return err
	}
	if os.Getenv(launchedEnv) == "1" {
		cfg.Reboot = func() error { return errExitReboot }
		cfg.Launched, cfg.BootSlot = true, boot.Slot(os.Getenv(slotEnv))
	}
	testHooks(&cfg, stderr) // nothing, unless built with the moat_testhooks tag (testhooks.go)
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// RunBoot is the launcher: `boot --state DIR --root FILE -- AGENT-FLAGS...`. self is the
// executable to run when no OS slot verifies (the factory image).
func RunBoot(ctx context.Context, args []string, self string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moat boot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, BootUsage); fs.PrintDefaults() }
	var b BootFlags
	b.Register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	return Boot(ctx, b, fs.Args(), self, stdout, stderr)
}

// BootFlags are the launcher's settings.
type BootFlags struct{ State, Root string }

// Register adds the launcher's flags to fs.
func (b *BootFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&b.State, "state", "", "state `DIR` (required)")
	fs.StringVar(&b.Root, "root", "", "pinned platform root `FILE` (required)")
}

// Boot runs the launcher with parsed flags and the agent's flags; see RunBoot.
func Boot(ctx context.Context, b BootFlags, agentFlags []string, self string, stdout, stderr io.Writer) error {
	if b.State == "" || b.Root == "" {
		return errors.New("--state and --root are required")
	}
	root, err := os.ReadFile(b.Root)
	if err != nil {
		return fmt.Errorf("--root: %w", err)
	}
	state, rootFile := &b.State, &b.Root
	agentArgs := append([]string{"agent", "--state", *state, "--root", *rootFile}, agentFlags...)
	log := slog.New(slog.NewTextHandler(stderr, nil))
	slots, err := boot.New(boot.Config{StateDir: b.State, Root: root, Tries: boot.DefaultTries, MaxPayloadBytes: boot.DefaultMaxPayloadBytes})
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		exe, slot := self, boot.Slot("")
		before, _ := slots.Record()
		c, rejected, err := slots.LaunchOS()
		for _, r := range rejected {
			log.Warn("slot rejected", "kind", r.Kind, "slot", r.Slot, "err", r.Err)
			queueReport(b.State, errreport.Report{Kind: errreport.UpdateFailed, Step: errreport.StepBoot, Code: "slot_rejected",
				Target: string(r.Kind) + "-" + string(r.Slot), Message: clipMessage(r.Err.Error())}, log)
		}
		if p := before.OS.Pending; err == nil && p != "" && c.Slot != p {
			// The OS on trial used up its tries without coming up and attesting.
			trial := before.OS.Images[p]
			log.Warn("new OS rolled back", "image", trial.Path, "back_to", c.Image.Path)
			queueReport(b.State, errreport.Report{Kind: errreport.UpdateFailed, Step: errreport.StepBoot, Code: "os_rolled_back", Target: trial.Path,
				Message: clipMessage(fmt.Sprintf("%s never came up and attested in %d boots; rolled back to %s", trial.Path, boot.DefaultTries, c.Image.Path))}, log)
		}
		switch {
		case errors.Is(err, boot.ErrNoImage):
			log.Info("no verified OS slot: running the factory agent", "path", self)
		case err != nil:
			return err
		default:
			exe, slot = c.Path, c.Slot
			log.Info("booting OS slot", "slot", c.Slot, "image", c.Image.Path, "trial", c.Trial)
		}
		cmd := exec.CommandContext(ctx, exe, agentArgs...) //nolint:gosec // G204: the verified OS slot's agent, or this binary
		cmd.Stdout, cmd.Stderr = stdout, stderr
		cmd.Env = append(os.Environ(), launchedEnv+"=1", slotEnv+"="+string(slot))
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 30 * time.Second
		err = cmd.Run()
		var ee *exec.ExitError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &ee) && ee.ExitCode() == ExitReboot:
			log.Info("the agent installed a new OS: rebooting")
			continue
		case err != nil:
			// An agent that dies is restarted through the launcher: a new OS that keeps
			// dying uses up its tries and is rolled back.
			log.Error("the agent stopped", "err", err)
			time.Sleep(time.Second)
			continue
		}
		return nil
	}
	return nil
}

// The launcher tells the agent it started that it did, and which OS slot it chose.
const (
	launchedEnv = "MOAT_LAUNCHED"
	slotEnv     = "MOAT_BOOT_SLOT"
)

// queueReport puts a report into the device's error queue, which the agent sends; the
// launcher runs only while no agent does.
func queueReport(state string, r errreport.Report, log *slog.Logger) {
	r.At = time.Now().UTC().Truncate(time.Second)
	r.ID = errreport.NewID(r.At)
	q, err := errqueue.Open(errqueue.Config{Dir: filepath.Join(state, "errors"), Now: time.Now, Logger: log})
	if err == nil {
		err = q.Put(r)
	}
	if err != nil {
		log.Error("queue error report", "kind", r.Kind, "err", err)
	}
}

func clipMessage(s string) string {
	if len(s) > errreport.MaxMessageBytes {
		return s[:errreport.MaxMessageBytes]
	}
	return s
}

// StatePath is where the launcher's state lives (for docs and tests).
func StatePath(state, name string) string { return filepath.Join(state, name) }
