package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/internal/sim"
)

// simFlags are the flags of `moat sim`.
type simFlags struct {
	server, deviceServer, token, opToken, tenant, product, group string
	caFile, rootFile, ramp, osPath, appPath, crashVersion        string
	statsFile, logLevel, cloud, cloudCA                          string
	devices                                                      int
	crashPercent, failingHeaterPercent                           float64
	duration, telemetryInterval                                  time.Duration
	jsonOut                                                      bool
}

func (f *simFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.server, "server", "", "management API `URL` of the server (required)")
	fs.StringVar(&f.deviceServer, "device-server", "", "device API `URL` of the server, agents' --server (required; 'moat server' prints it)")
	fs.StringVar(&f.token, "token", "", "a tenant Administrator's API `TOKEN`, or - for standard input (default: $MOAT_TOKEN)")
	fs.StringVar(&f.opToken, "operator-token", "", "a platform operator's API `TOKEN` to register the devices' keys, or - for standard input (default: $MOAT_OPERATOR_TOKEN)")
	fs.StringVar(&f.tenant, "tenant", "", "tenant `ID|NAME` (default: the token's only tenant)")
	fs.StringVar(&f.product, "product", "", "product `NAME` the devices are (required)")
	fs.StringVar(&f.group, "group", "", "device group `NAME` of --product the devices are claimed into (required)")
	fs.IntVar(&f.devices, "devices", 100, "how many devices to simulate")
	fs.StringVar(&f.caFile, "ca-cert", "", "PEM `FILE` of the CA to trust for both listeners (default: the system roots)")
	fs.StringVar(&f.rootFile, "root", "", "the pinned platform root, 1.root.json `FILE` (default: the server's, trusted on first use)")
	fs.StringVar(&f.ramp, "ramp", "500/s", "how fast devices start: `N/s` or N/m")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this long and print the summary; 0 runs until Ctrl-C")
	fs.StringVar(&f.osPath, "os", "", "OS target `PATH` the devices run at start (default: the newest on the group's feed)")
	fs.StringVar(&f.appPath, "app", "", "app target `PATH` the devices run at start (default: the group's current deployment)")
	fs.StringVar(&f.crashVersion, "crash-version", "", "devices running this app `VERSION` report app_crash error reports (with --crash-percent)")
	fs.Float64Var(&f.crashPercent, "crash-percent", 0, "the `PERCENT` of devices that crash on --crash-version")
	fs.StringVar(&f.cloud, "cloud", "", "`URL` of the tenant's cloud MQTT listener, mqtts://HOST:PORT ('moat cloud' prints it): each device sends it DW100 telemetry")
	fs.StringVar(&f.cloudCA, "cloud-ca", "", "PEM `FILE` of the cloud's TLS CA (its DATA/tls/ca.pem), the only trust for --cloud (required with --cloud); default $MOAT_CLOUD_CA")
	fs.DurationVar(&f.telemetryInterval, "telemetry-interval", sim.DefaultTelemetryInterval, "how often each device publishes telemetry to --cloud (1s to 1h, with jitter)")
	fs.Float64Var(&f.failingHeaterPercent, "failing-heater-percent", 0, "the `PERCENT` of devices whose heater fails: their drying air stays cool, for the cloud's heater rule (with --cloud)")
	fs.StringVar(&f.statsFile, "stats-file", "", "rewrite `FILE` with the statistics as JSON every second (for scripts)")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level on standard error: debug, info, warn or error")
	fs.BoolVar(&f.jsonOut, "json", false, "print the summary as JSON")
}

func newSimCmd(env *Env) *ffcli.Command {
	var f simFlags
	fs := flag.NewFlagSet("moat sim", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	f.register(fs)
	return &ffcli.Command{
		Name:       "sim",
		ShortUsage: "moat sim --server URL --device-server URL --product NAME --group NAME [flags]",
		ShortHelp:  "Simulate a fleet of devices on the real device protocol: for demos, load tests and evaluation.",
		LongHelp: `Runs many simulated devices in one process. Each gets an identity key made in memory,
registered by the platform operator (--operator-token) as manufactured devices are, claimed
into the tenant and put in --product/--group by the Administrator (--token). It then does
what a device does: attests with real evidence of the OS and app it runs, holds the
certificate it is issued and speaks mutual TLS with it, long-polls for updates, checks its
signed assignment with the agent's own update client, downloads and verifies each assigned
image (signed hash, length, manifest) and discards it, "installs" it by moving its
in-memory slot and attesting with the new measurement, and reports its update states and
error reports. Devices never give up: 503 with Retry-After and lost connections are retried
with jittered exponential backoff. Each run registers new devices.

SIGUSR1 plays a reconnect storm, as after a regional power cut: the certificate of every
started device expires at once; each drops its connections and attests again, and the
summary (and --stats-file's "storm") says when they all held a new certificate.

A progress line shows how many devices are attested, hold a certificate, wait, update, and
which app versions they run; at the end (--duration, or Ctrl-C) a summary follows (--json
for JSON, with per-target times at which devices held their verified assignment: p50 and
p99 give the update latency of a deployment). --crash-version and --crash-percent make a
share of the devices that install that app version report app_crash, for staged rollouts.

With --cloud, each device that holds a certificate also keeps an MQTT session with the
tenant's cloud ('moat cloud') on the agent's cloud protocol (mutual TLS with its attested
certificate, client ID = device ID, user name = product; reconnected after each renewal
and after SIGUSR1's storm) and runs a model of the DW100 app: every --telemetry-interval it
publishes one step of its wash cycle (water and drying temperatures, rinse-agent level)
and answers the cloud's heater-self-test. --failing-heater-percent gives that share of the
devices a failing heater, which the product's heater-drying-anomaly rule catches.
docs/sim.md has the figures of memory per device and the load script.

EXAMPLES
  MOAT_OPERATOR_TOKEN="$(cat operator.token)" moat sim --server https://127.0.0.1:8443 --device-server https://127.0.0.1:8444 --ca-cert ./moat-data/tls/ca.pem --token - --product DW100 --group Production --devices 10000 < admin.token
  moat sim ... --devices 1000 --crash-version 2.0.0 --crash-percent 5 --duration 10m --json
  moat sim ... --devices 1000 --cloud mqtts://127.0.0.1:8883 --cloud-ca ./cloud-data/tls/ca.pem --telemetry-interval 60s --failing-heater-percent 1`,
		FlagSet: fs,
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("moat sim takes no arguments, got %q", args[0])
			}
			cfg, err := f.config(env)
			if err != nil {
				return err
			}
			return runSim(ctx, env, f, cfg)
		},
	}
}

// config turns the flags into a sim.Config; a missing or malformed flag is a usage error.
func (f *simFlags) config(env *Env) (sim.Config, error) {
	switch {
	case f.server == "" || f.deviceServer == "":
		return sim.Config{}, usagef("--server URL and --device-server URL are required ('moat server' prints both)")
	case f.product == "" || f.group == "":
		return sim.Config{}, usagef("--product NAME and --group NAME are required")
	case f.token == "-" && f.opToken == "-":
		return sim.Config{}, usagef("only one of --token and --operator-token can be read from standard input")
	}
	switch f.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return sim.Config{}, usagef("--log-level must be debug, info, warn or error, got %q", f.logLevel)
	}
	ramp, err := parseRamp(f.ramp)
	if err != nil {
		return sim.Config{}, err
	}
	token, err := secretFlag(env, f.token, "MOAT_TOKEN", "--token")
	if err != nil {
		return sim.Config{}, err
	}
	opToken, err := secretFlag(env, f.opToken, "MOAT_OPERATOR_TOKEN", "--operator-token")
	if err != nil {
		return sim.Config{}, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || f.caFile != "" {
		pool = x509.NewCertPool()
	}
	if f.caFile != "" {
		b, err := os.ReadFile(f.caFile)
		if err != nil {
			return sim.Config{}, fmt.Errorf("read --ca-cert: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return sim.Config{}, usagef("--ca-cert %s holds no PEM certificate", f.caFile)
		}
	}
	var root []byte
	if f.rootFile != "" {
		if root, err = os.ReadFile(f.rootFile); err != nil {
			return sim.Config{}, fmt.Errorf("read --root: %w", err)
		}
	}
	cloud, err := f.cloudConfig(env)
	if err != nil {
		return sim.Config{}, err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(f.logLevel)) // checked above
	cfg := sim.Config{ServerURL: strings.TrimRight(f.server, "/"), DeviceURL: strings.TrimRight(f.deviceServer, "/"), ServerCAs: pool,
		Token: token, OperatorToken: opToken, Tenant: f.tenant, Product: f.product, Group: f.group, Devices: f.devices, Ramp: ramp,
		OS: f.osPath, App: f.appPath, Root: root, CrashVersion: f.crashVersion, CrashPercent: f.crashPercent, Cloud: cloud,
		Logger: slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))}
	if err := cfg.Validate(); err != nil {
		return sim.Config{}, usageError{err.Error()}
	}
	return cfg, nil
}

// cloudConfig is --cloud's configuration, nil without it. --cloud-ca defaults to
// MOAT_CLOUD_CA as it does for the 'moat cloud' commands, but only with --cloud: the
// variable set for those commands must not make a run without --cloud a usage error.
func (f *simFlags) cloudConfig(env *Env) (*sim.CloudConfig, error) {
	if f.cloud == "" {
		if f.cloudCA != "" || f.failingHeaterPercent != 0 {
			return nil, usagef("--cloud-ca and --failing-heater-percent need --cloud")
		}
		return nil, nil
	}
	caFile := f.cloudCA
	if caFile == "" && env.Getenv != nil {
		caFile = env.Getenv("MOAT_CLOUD_CA")
	}
	if caFile == "" {
		return nil, usagef("--cloud needs --cloud-ca FILE or MOAT_CLOUD_CA (the cloud's CA certificate)")
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read --cloud-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, usagef("--cloud-ca %s holds no PEM certificate", caFile)
	}
	return &sim.CloudConfig{Broker: f.cloud, CAs: pool, Interval: f.telemetryInterval, FailingHeaterPercent: f.failingHeaterPercent}, nil
}

// secretFlag is a token flag's value: given, "-" for standard input, or the variable.
func secretFlag(env *Env, v, variable, name string) (string, error) {
	if v == "" && env.Getenv != nil {
		v = env.Getenv(variable)
	}
	v, err := readSecret(env, v)
	if err != nil {
		return "", err
	}
	if v == "" {
		return "", usagef("no %s: pass %s - to read it from standard input, or set %s", strings.TrimPrefix(name, "--"), name, variable)
	}
	return v, nil
}

// parseRamp reads N/s, N/m or a bare N (per second).
func parseRamp(s string) (float64, error) {
	num, unit, _ := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 {
		return 0, usagef("--ramp must look like 500/s or 3000/m, got %q", s)
	}
	switch unit {
	case "", "s":
		return n, nil
	case "m":
		return n / 60, nil
	}
	return 0, usagef("--ramp must look like 500/s or 3000/m, got %q", s)
}

// runSim runs the simulation with a progress line until --duration or ctx ends, then
// prints the summary.
func runSim(ctx context.Context, env *Env, f simFlags, cfg sim.Config) error {
	s, err := sim.New(cfg)
	if err != nil {
		return err
	}
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	// SIGUSR1 plays the reconnect storm: every device's certificate expires at once.
	storms := make(chan os.Signal, 1)
	signal.Notify(storms, syscall.SIGUSR1)
	defer signal.Stop(storms)
	tty := isTerminal(env.Stderr)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-storms:
			if tty {
				fmt.Fprintln(env.Stderr)
			}
			fmt.Fprintf(env.Stderr, "moat sim: SIGUSR1: the certificates of %d devices expired; they attest again\n", s.Expire())
		case err := <-done:
			if tty {
				fmt.Fprintln(env.Stderr)
			}
			if err != nil {
				return err
			}
			return printSummary(env, f, s.Stats())
		case <-tick.C:
			st := s.Stats()
			if f.statsFile != "" {
				if err := writeStats(f.statsFile, st); err != nil {
					fmt.Fprintf(env.Stderr, "moat: warning: %v\n", err)
				}
			}
			switch {
			case tty:
				fmt.Fprintf(env.Stderr, "\r\033[K%s", st.Line())
			case n%10 == 0:
				fmt.Fprintln(env.Stderr, st.Line())
			}
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// writeStats replaces file with st as JSON, so a reader never sees half of it.
func writeStats(file string, st sim.Stats) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".sim-stats-*")
	if err != nil {
		return fmt.Errorf("write --stats-file: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write --stats-file: %w", err)
	}
	return nil
}

func printSummary(env *Env, f simFlags, st sim.Stats) error {
	if f.statsFile != "" {
		if err := writeStats(f.statsFile, st); err != nil {
			return err
		}
	}
	if f.jsonOut {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintln(env.Stdout, st.Line())
	fmt.Fprintf(env.Stdout, "attestations %d, refusals %d, installs %d, retries %d (%d answered busy), update states sent %d, error reports sent %d\n",
		st.Attestations, st.Refusals, st.Installs, st.Retries, st.Unavailable, st.StatesSent, st.ReportsSent)
	for t, ts := range st.Targets {
		fmt.Fprintf(env.Stdout, "%s: %d devices held the verified assignment, first %s, p50 %s, p99 %s, last %s\n", t, ts.Devices,
			ts.First.Format(time.RFC3339Nano), ts.P50.Format(time.RFC3339Nano), ts.P99.Format(time.RFC3339Nano), ts.Last.Format(time.RFC3339Nano))
	}
	if sm := st.Storm; sm != nil {
		fmt.Fprintf(env.Stdout, "reconnect storm at %s: %d of %d expired devices hold a new certificate", sm.At.Format(time.RFC3339Nano), sm.Devices, sm.Expired)
		if sm.Devices > 0 {
			fmt.Fprintf(env.Stdout, ", p50 after %s, p99 after %s, last after %s", sm.P50.Sub(sm.At).Round(time.Millisecond), sm.P99.Sub(sm.At).Round(time.Millisecond), sm.Last.Sub(sm.At).Round(time.Millisecond))
		}
		fmt.Fprintln(env.Stdout)
	}
	if c := st.Cloud; c != nil {
		fmt.Fprintf(env.Stdout, "cloud: %d devices connected, %d sessions established, %d telemetry messages published, %d acknowledged by the broker, %d dropped, %d diagnostics answered, %d failing heaters\n",
			c.Connected, c.Connects, c.Published, c.TelemetrySent, c.Dropped, c.DiagnosticsAnswered, c.FailingHeaters)
	}
	return nil
}
