package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/internal/localtls"
	"github.com/moat-iot/moat/internal/server"
)

// serverFlags registers the server's configuration in one place: each field has one flag,
// one MOAT_* variable (by ff's env prefix) and one key in a --config file.
func serverFlags(fs *flag.FlagSet, cfg *server.Config) {
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "management listener: HTTPS for the management API, OpenAPI, health and metrics; never asks for a client certificate (MOAT_ADDR)")
	fs.StringVar(&cfg.DeviceAddr, "device-addr", cfg.DeviceAddr, "device listener: HTTPS for the device API, asking for device certificates (mutual TLS); agents' --server (MOAT_DEVICE_ADDR)")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory: SQLite database and local TLS CA (MOAT_DATA)")
	fs.StringVar(&cfg.Database, "database", cfg.Database, "database: empty for SQLite in --data, or postgres://...; prefer MOAT_DATABASE when it holds a password")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "PEM certificate chain to serve instead of the local CA's (MOAT_TLS_CERT)")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "PEM private key for --tls-cert (MOAT_TLS_KEY)")
	fs.Var((*hostList)(&cfg.TLSHosts), "tls-hosts", "comma-separated DNS names and IP addresses the local CA's certificate also covers (MOAT_TLS_HOSTS)")
	fs.StringVar(&cfg.OnlineKey, "online-key", cfg.OnlineKey, "online signing key file for the TUF repository's snapshot and timestamp; default DATA/keys/online.key, created at first start (MOAT_ONLINE_KEY)")
	fs.StringVar(&cfg.CAKeyKEK, "ca-kek", cfg.CAKeyKEK, "file of the key that wraps tenant device-CA keys in the database; default DATA/keys/ca.kek, created at first start; replicas share it (MOAT_CA_KEK)")
	fs.DurationVar(&cfg.CertLifetime, "certificate-lifetime", cfg.CertLifetime, "lifetime of device certificates issued after attestation, 5m to 720h (MOAT_CERTIFICATE_LIFETIME)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error (MOAT_LOG_LEVEL)")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json (MOAT_LOG_FORMAT)")
	fs.Int64Var(&cfg.DefaultStorageQuotaBytes, "default-storage-quota-bytes", cfg.DefaultStorageQuotaBytes, "storage quota of tenants for which the platform operator set none, in bytes (MOAT_DEFAULT_STORAGE_QUOTA_BYTES)")
	fs.IntVar(&cfg.AttestationNoncesPerMinute, "attestation-nonces-per-minute", cfg.AttestationNoncesPerMinute, "attestation nonces each device ID may ask for per minute on one server; past it 503 with Retry-After (MOAT_ATTESTATION_NONCES_PER_MINUTE)")
	fs.IntVar(&cfg.MaxUnauthenticatedRequests, "max-unauthenticated-requests", cfg.MaxUnauthenticatedRequests, "requests served at once on routes that need no credential (attestation); past it four times as many wait up to 1s for a slot, then 503 with Retry-After (MOAT_MAX_UNAUTHENTICATED_REQUESTS)")
	fs.DurationVar(&cfg.ErrorReportRetention, "error-report-retention", cfg.ErrorReportRetention, "how long error reports are kept after they are received, 24h to 87600h; older ones are deleted in the background (MOAT_ERROR_REPORT_RETENTION)")
	fs.DurationVar(&cfg.RolloutAdvanceInterval, "rollout-advance-interval", cfg.RolloutAdvanceInterval, "how often staged rollouts are looked at and advanced (one replica at a time), 100ms to 1h (MOAT_ROLLOUT_ADVANCE_INTERVAL)")
	fs.DurationVar(&cfg.AuthCacheTTL, "auth-cache-ttl", cfg.AuthCacheTTL, "how long a verified API token is trusted before the database is read again, 1s to 1m; revocations and role changes apply at once on every replica (MOAT_AUTH_CACHE_TTL)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long in-flight requests may take to finish on SIGTERM (MOAT_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&cfg.S3Endpoint, "s3-endpoint", cfg.S3Endpoint, "keep image blobs in an S3-compatible bucket instead of DATA/blobs, so replicas share them: https://host[:port] (http:// on loopback only) (MOAT_S3_ENDPOINT)")
	fs.StringVar(&cfg.S3Bucket, "s3-bucket", cfg.S3Bucket, "the S3 bucket for blobs; it must exist (MOAT_S3_BUCKET)")
	fs.StringVar(&cfg.S3Region, "s3-region", cfg.S3Region, "the S3 bucket's region; empty is us-east-1 (MOAT_S3_REGION)")
	fs.StringVar(&cfg.S3Prefix, "s3-prefix", cfg.S3Prefix, "put before every S3 key: empty or ending in / (MOAT_S3_PREFIX)")
	fs.StringVar(&cfg.S3CredentialsFile, "s3-credentials-file", cfg.S3CredentialsFile, "file (mode 0600) of two lines: the S3 access key ID, then the secret access key (MOAT_S3_CREDENTIALS_FILE)")
	fs.StringVar(&cfg.S3CAFile, "s3-ca-file", cfg.S3CAFile, "PEM CA certificates that verify the S3 endpoint's TLS certificate; empty: the system's (MOAT_S3_CA_FILE)")
	fs.StringVar(&cfg.Pprof, "pprof", cfg.Pprof, "serve Go's runtime profiles (CPU, heap, goroutines, trace) at http://ADDR/debug/pprof/ for go tool pprof; ADDR must be a loopback host:port such as 127.0.0.1:6060; empty: off (MOAT_PPROF)")
	fs.StringVar(&cfg.MetricsTokenFile, "metrics-token-file", cfg.MetricsTokenFile, "file (mode 0600) holding the token /metrics requires as 'Authorization: Bearer TOKEN'; empty leaves /metrics open to anyone who reaches --addr (MOAT_METRICS_TOKEN_FILE)")
}

func newServerCmd(env *Env) *ffcli.Command {
	cfg := server.DefaultConfig()
	fs := flag.NewFlagSet("moat server", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	serverFlags(fs, &cfg)
	fs.String("config", "", "JSON config file (keys as the flag names, plus \"version\": 1)")
	check := fs.Bool("check-config", false, "print the effective configuration (secrets redacted) and exit")
	return &ffcli.Command{
		Name:       "server",
		ShortUsage: "moat server [flags]",
		ShortHelp:  "Run the security service (HTTPS management API, device API, health and metrics).",
		LongHelp: `Runs the security service. On first start with an empty data directory it creates
its TLS certificate (a local CA in DATA/tls, unless --tls-cert/--tls-key are given), its SQLite
database, and prints a platform-operator token once. With --database postgres://... state
lives in PostgreSQL, so several servers can share it (with the same --online-key and --ca-kek
files); background jobs (TUF timestamp re-signing, nonce pruning) then run on one of them at a
time, and a change made through one wakes the devices waiting on every one (PostgreSQL
LISTEN/NOTIFY). Replicas share image blobs through an S3-compatible bucket (--s3-endpoint,
--s3-bucket, --s3-credentials-file).

Two listeners, both TLS 1.2 (ECDHE with AEAD suites only) or 1.3:
  --addr         /api/v1 (management API, OpenAPI at /api/v1/openapi.json), /healthz,
                 /readyz, /metrics (Prometheus; with --metrics-token-file it needs
                 'Authorization: Bearer TOKEN'). Never asks for a client certificate, so
                 browsers are not prompted; sends HSTS.
  --device-addr  /api/v1/device (the device API: attestation, then mutual TLS with device
                 certificates), /healthz, /readyz. Give agents this address as --server.

Configuration: defaults < --config file < MOAT_* environment < flags. SIGINT or SIGTERM
shuts down gracefully.

EXAMPLES
  moat server
  moat server --data /var/lib/moat --addr 0.0.0.0:8443 --device-addr 0.0.0.0:8444
  MOAT_DATABASE=postgres://moat:secret@db/moat moat server
  moat server --s3-endpoint https://s3.example.com --s3-bucket moat-blobs --s3-credentials-file /etc/moat/s3
  moat server --config /etc/moat/server.json --check-config`,
		FlagSet: fs,
		Options: []ff.Option{
			ff.WithEnvVarPrefix("MOAT"),
			ff.WithConfigFileFlag("config"),
			ff.WithConfigFileParser(StrictJSONConfig),
		},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("moat server takes no arguments, got %q", args[0])
			}
			if err := cfg.Validate(); err != nil {
				return usagef("invalid configuration:\n%v", err)
			}
			if *check {
				return printConfig(env, fs, map[string]string{"database": cfg.Redacted().Database})
			}
			log := newLogger(env.Stderr, cfg.LogLevel, cfg.LogFormat)
			s, err := server.Open(ctx, cfg, log)
			if err != nil {
				return err
			}
			if cfg.MetricsTokenFile == "" {
				log.Warn("/metrics is open to anyone who reaches the management listener; set --metrics-token-file to require a token")
			}
			fmt.Fprintf(env.Stdout, "moat server: %s\n", s.URL)
			fmt.Fprintf(env.Stdout, "Device API (agents' --server): %s\n", s.DeviceURL)
			fmt.Fprintf(env.Stdout, "TLS CA: %s (SHA-256 %s)\n", filepath.Join(cfg.DataDir, "tls", "ca.pem"), localtls.Fingerprint(s.CAPEM))
			if s.BootstrapToken != "" {
				fmt.Fprintf(env.Stdout, "\nPlatform-operator token (shown once, keep it safe):\n  %s\n\n", s.BootstrapToken)
				fmt.Fprintf(env.Stdout, "Log in with:\n  moat login --server %s --ca-cert %s --token -\n\n",
					s.URL, filepath.Join(cfg.DataDir, "tls", "ca.pem"))
			}
			return s.Serve(ctx)
		},
	}
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by Config.Validate
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// printConfig prints the effective configuration of a command (--check-config) as a config
// file: its flag names, the version, and database with its secrets already redacted, so
// the output can be saved and used with --config.
func printConfig(env *Env, fs *flag.FlagSet, redacted map[string]string) error {
	out := map[string]any{"version": ConfigVersion}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" && f.Name != "check-config" {
			out[f.Name] = f.Value.String()
		}
	})
	for k, v := range redacted {
		out[k] = v
	}
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// ConfigVersion is the only config file version this build reads.
const ConfigVersion = 1

// StrictJSONConfig parses a config file for ff: one JSON object whose keys are flag names,
// with "version": 1 required; unknown keys (ff refuses undefined flags), trailing data and a
// missing or other version are errors.
func StrictJSONConfig(r io.Reader, set func(name, value string) error) error {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("config file: trailing data after the JSON object")
	}
	v, ok := m["version"]
	if !ok {
		return errors.New("config file: \"version\" is required (use 1)")
	}
	if n, ok := v.(json.Number); !ok || n.String() != fmt.Sprint(ConfigVersion) {
		return fmt.Errorf("config file: version %v is not supported (use %d)", v, ConfigVersion)
	}
	delete(m, "version")
	var errs []error
	for k, val := range m {
		var s string
		switch x := val.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String()
		case bool:
			s = fmt.Sprint(x)
		default:
			errs = append(errs, fmt.Errorf("config file: %q must be a string, number or boolean", k))
			continue
		}
		if err := set(k, s); err != nil {
			errs = append(errs, fmt.Errorf("config file: key %q: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// readSecret reads a secret given as "-" (stdin) or a value, trimming white space.
func readSecret(env *Env, v string) (string, error) {
	if v != "-" {
		return v, nil
	}
	b, err := io.ReadAll(io.LimitReader(env.Stdin, 4096))
	if err != nil {
		return "", fmt.Errorf("read secret from standard input: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// hostList is a comma-separated flag value that prints back the way it parses, so that
// --check-config output is itself a valid config file.
type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

func (h *hostList) Set(v string) error {
	*h = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*h = append(*h, s)
		}
	}
	return nil
}
