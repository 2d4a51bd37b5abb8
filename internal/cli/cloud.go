package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/cloud"
	"github.com/moat-iot/moat/internal/cloud/rules"
	"github.com/moat-iot/moat/internal/localtls"
)

// cloudFlags registers the cloud's configuration in one place: one flag, one MOAT_*
// variable and one --config key per field.
func cloudFlags(fs *flag.FlagSet, cfg *cloud.Config) {
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "HTTPS listener: the cloud's API (/api/v1), /healthz, /readyz, /metrics (MOAT_ADDR)")
	fs.StringVar(&cfg.MQTTAddr, "mqtt-addr", cfg.MQTTAddr, "MQTT 3.1.1 over TLS listener for devices, which present their attested certificates (MOAT_MQTT_ADDR)")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory: SQLite database, the broker's JetStream store, local TLS CA (MOAT_DATA)")
	fs.StringVar(&cfg.Database, "database", cfg.Database, "database: empty for SQLite in --data, or postgres://...; prefer MOAT_DATABASE when it holds a password")
	fs.StringVar(&cfg.DeviceCA, "device-ca", cfg.DeviceCA, "PEM `FILE` from 'moat ca-certificate download': the only trust for device certificates (required; MOAT_DEVICE_CA)")
	fs.StringVar(&cfg.Server, "server", cfg.Server, "the security service's management `URL`, where staff tokens are checked (required; MOAT_SERVER)")
	fs.StringVar(&cfg.ServerCA, "server-ca", cfg.ServerCA, "PEM `FILE` of the CA the security service's certificate chains to (its DATA/tls/ca.pem); default the system roots (MOAT_SERVER_CA)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "PEM certificate chain to serve on both listeners instead of the local CA's (MOAT_TLS_CERT)")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "PEM private key for --tls-cert (MOAT_TLS_KEY)")
	fs.Var((*hostList)(&cfg.TLSHosts), "tls-hosts", "comma-separated DNS names and IP addresses the local CA's certificate also covers (MOAT_TLS_HOSTS)")
	fs.Var((*hostList)(&cfg.Rules), "rules", "comma-separated rule `FILES`, one per product (docs/cloud.md; MOAT_RULES)")
	fs.DurationVar(&cfg.RawRetention, "raw-retention", cfg.RawRetention, "how long raw readings are kept (MOAT_RAW_RETENTION)")
	fs.DurationVar(&cfg.SummaryRetention, "summary-retention", cfg.SummaryRetention, "how long per-cycle and hourly summaries are kept (MOAT_SUMMARY_RETENTION)")
	fs.DurationVar(&cfg.DiagnosticsTimeout, "diagnostics-timeout", cfg.DiagnosticsTimeout, "how long a diagnostics request waits for the device when the caller names no timeout (MOAT_DIAGNOSTICS_TIMEOUT)")
	fs.BoolVar(&cfg.SyncAlways, "sync-always", cfg.SyncAlways, "fsync each message before the device's PUBACK (about a tenth of the throughput); off, a crash loses nothing acknowledged but a power cut may lose the last --sync-interval (MOAT_SYNC_ALWAYS)")
	fs.DurationVar(&cfg.SyncInterval, "sync-interval", cfg.SyncInterval, "how often the broker's store is fsynced without --sync-always, 10ms to 2m (MOAT_SYNC_INTERVAL)")
	fs.Int64Var(&cfg.MaxMessagesPerDevice, "max-messages-per-device", cfg.MaxMessagesPerDevice, "messages of one device the broker holds until the ingest stores them; past it its oldest are dropped (MOAT_MAX_MESSAGES_PER_DEVICE)")
	fs.Float64Var(&cfg.DeviceRate, "device-rate", cfg.DeviceRate, "messages per second stored from one device; more are dropped and counted (MOAT_DEVICE_RATE)")
	fs.IntVar(&cfg.DeviceBurst, "device-burst", cfg.DeviceBurst, "messages one device may send at once above --device-rate (MOAT_DEVICE_BURST)")
	fs.StringVar(&cfg.ClusterName, "cluster-name", cfg.ClusterName, "NATS cluster name: join the embedded brokers of several moat cloud processes (MOAT_CLUSTER_NAME)")
	fs.StringVar(&cfg.ClusterAddr, "cluster-addr", cfg.ClusterAddr, "host:port the embedded broker listens on for its cluster peers (MOAT_CLUSTER_ADDR)")
	fs.Var((*hostList)(&cfg.Routes), "routes", "comma-separated nats-route://HOST:PORT of the cluster peers (MOAT_ROUTES)")
	fs.StringVar(&cfg.PortalURL, "portal-url", cfg.PortalURL, "public https:// base URL of the owners' portal (/portal/) and the support view (/support/), for links in mail; default the cloud's address (MOAT_PORTAL_URL)")
	fs.StringVar(&cfg.SessionKeyFile, "session-key-file", cfg.SessionKeyFile, "`FILE` with the 32-byte key sealing support-view sessions; default DATA/session.key, created on first start; replicas need the same (MOAT_SESSION_KEY_FILE)")
	fs.StringVar(&cfg.SMTPAddr, "smtp-addr", cfg.SMTPAddr, "mail submission server host:port for owners' mail (verification links, alerts, prompts); without it mail waits in the outbox (MOAT_SMTP_ADDR)")
	fs.StringVar(&cfg.SMTPFrom, "smtp-from", cfg.SMTPFrom, "sender address of the cloud's mail (MOAT_SMTP_FROM)")
	fs.StringVar(&cfg.SMTPUsername, "smtp-username", cfg.SMTPUsername, "user name for SMTP PLAIN authentication, only over TLS (MOAT_SMTP_USERNAME)")
	fs.StringVar(&cfg.SMTPPasswordFile, "smtp-password-file", cfg.SMTPPasswordFile, "`FILE` holding the SMTP password (MOAT_SMTP_PASSWORD_FILE)")
	fs.StringVar(&cfg.SMTPTLS, "smtp-tls", cfg.SMTPTLS, "starttls (the default: required), tls (implicit) or none (loopback servers only) (MOAT_SMTP_TLS)")
	fs.StringVar(&cfg.SMTPCA, "smtp-ca", cfg.SMTPCA, "PEM `FILE` of further CAs trusted for the SMTP server's certificate (MOAT_SMTP_CA)")
	fs.Var((*hostList)(&cfg.Webhooks), "webhooks", "comma-separated NAME=URL endpoints that receive the cloud's events, signed per Standard Webhooks (MOAT_WEBHOOKS)")
	fs.Var((*hostList)(&cfg.WebhookSecretFiles), "webhook-secret-files", "comma-separated NAME=FILE: each webhook's secret (whsec_...) (MOAT_WEBHOOK_SECRET_FILES)")
	fs.StringVar(&cfg.Shops, "shops", cfg.Shops, "repair shops `FILE` (YAML; docs/repair-shop-api.md) where warranty parts are reserved (MOAT_SHOPS)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error (MOAT_LOG_LEVEL)")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json (MOAT_LOG_FORMAT)")
	fs.StringVar(&cfg.MetricsTokenFile, "metrics-token-file", cfg.MetricsTokenFile, "file (mode 0600) holding the token /metrics requires as 'Authorization: Bearer TOKEN' (MOAT_METRICS_TOKEN_FILE)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long in-flight work may take to finish on SIGTERM (MOAT_SHUTDOWN_TIMEOUT)")
}

func newCloudCmd(env *Env) *ffcli.Command {
	cfg := cloud.DefaultConfig()
	fs := flag.NewFlagSet("moat cloud", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	cloudFlags(fs, &cfg)
	fs.String("config", "", "JSON config file (keys as the flag names, plus \"version\": 1)")
	check := fs.Bool("check-config", false, "print the effective configuration (secrets redacted) and exit")
	return &ffcli.Command{
		Name:       "cloud",
		ShortUsage: "moat cloud [flags] | moat cloud <command> [flags]",
		ShortHelp:  "Run the manufacturer cloud (MQTT telemetry, rules, diagnostics), or query it.",
		LongHelp: `Without a command, runs the tenant's manufacturer cloud: an MQTT 3.1.1 broker over TLS
(an embedded NATS server with JetStream) that admits only devices presenting an unexpired
certificate from the tenant's device CA (--device-ca, from 'moat ca-certificate download'),
each on its own topics only; durable ingest of their telemetry into SQLite (or PostgreSQL)
with per-cycle and hourly summaries; the rules of each product (--rules) that raise alerts
on a failing part; and remote diagnostics. docs/cloud.md has the topic scheme, payloads,
rule files and the scale-out setup.

The commands query a running cloud with your moat login token (checked by the cloud with
the security service): give the cloud's URL with --cloud or MOAT_CLOUD, and its CA with
--cloud-ca or MOAT_CLOUD_CA.

Configuration: defaults < --config file < MOAT_* environment < flags. SIGINT or SIGTERM
shuts down gracefully.

EXAMPLES
  moat ca-certificate download --out contoso-devices.pem
  moat cloud --device-ca contoso-devices.pem --server https://moat.example:8443 --rules examples/dw100/rules.yaml
  moat cloud telemetry 3f9a...e1 --since 1h --cloud https://cloud.example:8446
  moat cloud diagnostics run 3f9a...e1 --command heater-self-test --wait`,
		FlagSet: fs,
		Options: []ff.Option{
			ff.WithEnvVarPrefix("MOAT"),
			ff.WithConfigFileFlag("config"),
			ff.WithConfigFileParser(StrictJSONConfig),
		},
		Subcommands: []*ffcli.Command{
			newCloudDevices(env), newCloudTelemetry(env), newCloudSummaries(env), newCloudAlerts(env),
			newCloudDiagnostics(env), newCloudRules(env),
			newCloudClaimCodes(env), newCloudSales(env), newCloudServiceRequests(env), newCloudReservations(env),
		},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for 'moat cloud'; see 'moat cloud --help'", args[0])
			}
			if err := cfg.Validate(); err != nil {
				return usagef("invalid configuration:\n%v", err)
			}
			if *check {
				r := cfg.Redacted()
				return printConfig(env, fs, map[string]string{"database": r.Database, "webhooks": strings.Join(r.Webhooks, ",")})
			}
			log := newLogger(env.Stderr, cfg.LogLevel, cfg.LogFormat)
			c, err := cloud.Open(ctx, cfg, log)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "moat cloud: %s (tenant %s)\n", c.URL, c.Tenant)
			fmt.Fprintf(env.Stdout, "MQTT for devices: mqtts://%s\n", c.MQTTAddr)
			fmt.Fprintf(env.Stdout, "TLS CA: %s (SHA-256 %s)\n", c.CAFile, localtls.Fingerprint(c.CAPEM))
			return c.Serve(ctx)
		},
	}
}

// cloudConn holds the flags every query command takes to reach the cloud.
type cloudConn struct {
	url, ca string
}

func (cc *cloudConn) register(fs *flag.FlagSet) {
	fs.StringVar(&cc.url, "cloud", "", "the cloud's `URL`, https://HOST:PORT (default $MOAT_CLOUD)")
	fs.StringVar(&cc.ca, "cloud-ca", "", "PEM `FILE` of the cloud's TLS CA (its DATA/tls/ca.pem); default $MOAT_CLOUD_CA, else the system roots")
}

// client returns a client for the cloud, authenticated with the login's moat token.
func (cc *cloudConn) client(s *session) (*client.Client, error) {
	if cc.url == "" && s.env.Getenv != nil {
		cc.url = s.env.Getenv("MOAT_CLOUD")
	}
	if cc.ca == "" && s.env.Getenv != nil {
		cc.ca = s.env.Getenv("MOAT_CLOUD_CA")
	}
	if cc.url == "" {
		return nil, usagef("no cloud: give --cloud https://HOST:PORT or set MOAT_CLOUD")
	}
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	var caPEM []byte
	if cc.ca != "" {
		if caPEM, err = os.ReadFile(cc.ca); err != nil {
			return nil, usagef("--cloud-ca: %v", err)
		}
	}
	return newClient(s.env, cc.url, cfg.Token, caPEM, false)
}

func newCloudDevices(env *Env) *ffcli.Command {
	var cc cloudConn
	return newVerb(env, "cloud", verb{
		name:  "devices",
		short: "List the devices that have connected to the cloud.",
		long: `Lists the devices that have connected to the cloud's MQTT broker with a valid certificate:
their product (as the attested agent states it), when the cloud first and last saw them
and when their current certificate expires.

EXAMPLES
  moat cloud devices --cloud https://cloud.example:8446`,
		flags: cc.register,
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 0 {
				return usagef("moat cloud devices takes no arguments")
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			var items []client.CloudDevice
			opts := client.ListOptions{Limit: 1000}
			for {
				page, err := c.ListCloudDevices(ctx, opts)
				if err != nil {
					return err
				}
				items = append(items, page.Items...)
				if page.NextPageToken == "" {
					break
				}
				opts.PageToken = page.NextPageToken
			}
			return printList(s, items, []string{"DEVICE", "PRODUCT", "LAST SEEN", "CERTIFICATE UNTIL"}, func(d client.CloudDevice) []string {
				return []string{d.ID, d.Product, fmtTime(d.LastSeen), fmtTime(d.CertNotAfter)}
			})
		},
	})
}

func newCloudTelemetry(env *Env) *ffcli.Command {
	var cc cloudConn
	var since, until, metric string
	var limit int
	return newVerb(env, "cloud", verb{
		name:  "telemetry",
		args:  "DEVICE",
		short: "Show a device's telemetry readings, oldest first.",
		long: `Shows the raw readings a device sent (kept for the cloud's --raw-retention), oldest first:
the device's time, cycle and phase, metric, value and unit. --since and --until take an
RFC 3339 time or a duration back from now (1h, 7d). 'moat cloud summaries' shows the per-cycle and
hourly figures kept longer.

EXAMPLES
  moat cloud telemetry 3f9a...e1 --since 1h
  moat cloud telemetry 3f9a...e1 --metric drying_temp --since 2026-12-01T00:00:00Z -o json`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&since, "since", "1h", "first `TIME` (RFC 3339, or a duration back from now: 1h, 7d)")
			fs.StringVar(&until, "until", "", "last `TIME` (RFC 3339, or a duration back from now); default now")
			fs.StringVar(&metric, "metric", "", "only this `METRIC` (drying_temp, ...)")
			fs.IntVar(&limit, "limit", 1000, "show at most `N` readings (1 to 100000)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) != 1 {
				return usagef("moat cloud telemetry takes one DEVICE")
			}
			now := time.Now()
			q := client.TelemetryQuery{Metric: metric}
			var err error
			if q.Since, err = parseSince("since", since, now); err != nil {
				return err
			}
			if q.Until, err = parseSince("until", until, now); err != nil {
				return err
			}
			if limit < 1 || limit > 100000 {
				return usagef("--limit must be from 1 to 100000, got %d", limit)
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			var items []client.Reading
			for {
				q.Limit = min(limit-len(items), 1000)
				page, err := c.ListTelemetry(ctx, args[0], q)
				if err != nil {
					return err
				}
				items = append(items, page.Items...)
				if page.NextPageToken == "" || len(items) >= limit {
					if page.NextPageToken != "" {
						s.note("Showing the first %d readings; --limit or --until shows others.", limit)
					}
					break
				}
				q.PageToken = page.NextPageToken
			}
			return printList(s, items, []string{"TIME", "CYCLE", "PHASE", "METRIC", "VALUE"}, func(r client.Reading) []string {
				return []string{fmtTime(r.Time), dash(r.Cycle), dash(r.Phase), r.Metric, fmt.Sprintf("%g %s", r.Value, r.Unit)}
			})
		},
	})
}

func newCloudSummaries(env *Env) *ffcli.Command {
	var cc cloudConn
	var since, per string
	var limit int
	return newVerb(env, "cloud", verb{
		name:  "summaries",
		args:  "DEVICE",
		short: "Show a device's per-cycle or hourly summaries (min, max, average per metric).",
		long: `Shows the downsampled figures the cloud keeps for --summary-retention: per cycle (--per
cycle) or per hour (--per hour), each metric's minimum, maximum, average and count.

EXAMPLES
  moat cloud summaries 3f9a...e1 --per cycle --since 168h
  moat cloud summaries 3f9a...e1 --per hour --since 24h -o json`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&per, "per", "cycle", "cycle or hour")
			fs.StringVar(&since, "since", "168h", "first `TIME` (RFC 3339, or a duration back from now: 1h, 7d)")
			fs.IntVar(&limit, "limit", 1000, "show at most `N` summaries (1 to 1000)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) != 1 {
				return usagef("moat cloud summaries takes one DEVICE")
			}
			if per != "cycle" && per != "hour" {
				return usagef("--per must be cycle or hour, got %q", per)
			}
			t, err := parseSince("since", since, time.Now())
			if err != nil {
				return err
			}
			if limit < 1 || limit > 1000 {
				return usagef("--limit must be from 1 to 1000, got %d", limit)
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			items, err := c.ListSummaries(ctx, args[0], per, t, limit)
			if err != nil {
				return err
			}
			return printList(s, items, []string{strings.ToUpper(per), "METRIC", "MIN", "AVG", "MAX", "COUNT"}, func(m client.Summary) []string {
				return []string{m.Key, m.Metric, fmt.Sprintf("%.1f %s", m.Min, m.Unit), fmt.Sprintf("%.1f", m.Avg), fmt.Sprintf("%.1f", m.Max), fmt.Sprint(m.Count)}
			})
		},
	})
}

func newCloudAlerts(env *Env) *ffcli.Command {
	var cc cloudConn
	var state, device, product string
	var limit int
	return newVerb(env, "cloud", verb{
		name:  "alerts",
		args:  "[ID]",
		short: "List alerts, newest first, or show one with its evidence and diagnostics.",
		long: `Without an ID, lists the alerts the rules raised, newest first: each is one episode of a
rule firing for a device (it fires once and clears when the condition ends). With an ID,
shows that alert with the readings that fired it and the diagnostics its actions ran.

EXAMPLES
  moat cloud alerts --state open
  moat cloud alerts --device 3f9a...e1
  moat cloud alerts alr_01jf... -o json`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&state, "state", "", "open or cleared; default both")
			fs.StringVar(&device, "device", "", "only this `DEVICE`")
			fs.StringVar(&product, "product", "", "only this `PRODUCT`")
			fs.IntVar(&limit, "limit", 100, "show at most `N` alerts (1 to 1000)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 1 {
				return usagef("moat cloud alerts takes at most one alert ID")
			}
			if state != "" && state != "open" && state != "cleared" {
				return usagef("--state must be open or cleared, got %q", state)
			}
			if limit < 1 || limit > 1000 {
				return usagef("--limit must be from 1 to 1000, got %d", limit)
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				a, err := c.GetAlert(ctx, args[0])
				if err != nil {
					return err
				}
				if s.json() {
					return s.printJSON(a)
				}
				fields := [][2]string{{"ID", a.ID}, {"Rule", a.Rule}, {"Severity", a.Severity}, {"State", a.State},
					{"Device", a.Device}, {"Product", a.Product}, {"Opened", fmtTime(a.OpenedAt)}}
				if a.ClearedAt != nil {
					fields = append(fields, [2]string{"Cleared", fmtTime(*a.ClearedAt)})
				}
				fields = append(fields, [2]string{"Message", a.Message})
				for _, d := range a.Diagnostics {
					fields = append(fields, [2]string{"Diagnostic", fmt.Sprintf("%s %s: %s %s", d.ID, d.Command, d.State, diagOutcome(d))})
				}
				return s.show(a, fields)
			}
			page, err := c.ListAlerts(ctx, client.AlertQuery{State: state, Device: device, Product: product, Limit: limit})
			if err != nil {
				return err
			}
			if page.NextPageToken != "" {
				s.note("Showing the newest %d alerts; --limit shows more.", limit)
			}
			return printList(s, page.Items, []string{"ID", "OPENED", "STATE", "SEVERITY", "RULE", "DEVICE", "MESSAGE"}, func(a client.Alert) []string {
				return []string{a.ID, fmtTime(a.OpenedAt), a.State, a.Severity, a.Rule, a.Device, a.Message}
			})
		},
	})
}

func diagOutcome(d client.Diagnostic) string {
	switch {
	case d.Error != "":
		return d.Error
	case len(d.Result) > 0:
		return string(d.Result)
	}
	return ""
}

// subNoun is a noun under another ("moat cloud diagnostics"): its command is named by
// its last word.
func subNoun(c *ffcli.Command) *ffcli.Command {
	c.Name = c.Name[strings.LastIndexByte(c.Name, ' ')+1:]
	return c
}

func newCloudDiagnostics(env *Env) *ffcli.Command {
	return subNoun(newNoun(env, "cloud diagnostics", "Run remote diagnostics on a device and read their results.",
		`A diagnostics request goes to the device over its MQTT session; the device's application
runs the named diagnostic through the SDK and answers. The cloud stores the result, the
app's error or a timeout. Running one needs the Contributor or Administrator role.

EXAMPLES
  moat cloud diagnostics run 3f9a...e1 --command heater-self-test --wait
  moat cloud diagnostics list --device 3f9a...e1`,
		newCloudDiagRun(env), newCloudDiagShow(env), newCloudDiagList(env)))
}

func newCloudDiagRun(env *Env) *ffcli.Command {
	var cc cloudConn
	var command, args, timeout string
	var wait bool
	return newVerb(env, "cloud diagnostics", verb{
		name:  "run",
		args:  "DEVICE",
		short: "Ask a device to run a diagnostic (heater-self-test, ...).",
		long: `Sends the diagnostics request to the device and prints it. With --wait it waits for the
answer (or the timeout) and prints the outcome; the exit status is non-zero unless the
diagnostic succeeded.

EXAMPLES
  moat cloud diagnostics run 3f9a...e1 --command heater-self-test --wait
  moat cloud diagnostics run 3f9a...e1 --command heater-self-test --args '{"seconds": 30}' --timeout 5m`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&command, "command", "", "the diagnostic `NAME` the app implements (required)")
			fs.StringVar(&args, "args", "", "arguments for the app, one JSON `VALUE`")
			fs.StringVar(&timeout, "timeout", "", "how long the cloud waits for the device (Go `DURATION`); default the cloud's")
			fs.BoolVar(&wait, "wait", false, "wait for the outcome")
		},
		run: func(ctx context.Context, s *session, pos []string) error {
			if len(pos) != 1 {
				return usagef("moat cloud diagnostics run takes one DEVICE")
			}
			if command == "" {
				return usagef("--command is required")
			}
			req := client.DiagnosticCreate{Command: command, Timeout: timeout}
			if args != "" {
				if !json.Valid([]byte(args)) {
					return usagef("--args must be one JSON value")
				}
				req.Args = json.RawMessage(args)
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			d, err := c.RunDiagnostic(ctx, pos[0], req)
			if err != nil {
				return err
			}
			for wait && d.State == "pending" {
				if d, err = c.GetDiagnostic(ctx, d.ID, 30*time.Second); err != nil {
					return err
				}
			}
			if err := showDiagnostic(s, d); err != nil {
				return err
			}
			if wait && d.State != "succeeded" {
				return &cliError{code: ExitError, msg: fmt.Sprintf("diagnostic %s %s", d.ID, strings.ReplaceAll(d.State, "_", " "))}
			}
			return nil
		},
	})
}

func showDiagnostic(s *session, d client.Diagnostic) error {
	if s.json() {
		return s.printJSON(d)
	}
	fields := [][2]string{{"ID", d.ID}, {"Device", d.Device}, {"Command", d.Command}, {"State", d.State},
		{"Requested by", d.RequestedBy}, {"Requested", fmtTime(d.RequestedAt)}, {"Deadline", fmtTime(d.Deadline)}}
	if d.FinishedAt != nil {
		fields = append(fields, [2]string{"Finished", fmtTime(*d.FinishedAt)})
	}
	if len(d.Result) > 0 {
		fields = append(fields, [2]string{"Result", string(d.Result)})
	}
	if d.Error != "" {
		fields = append(fields, [2]string{"Error", d.Error})
	}
	if d.AlertID != "" {
		fields = append(fields, [2]string{"Alert", d.AlertID})
	}
	return s.show(d, fields)
}

func newCloudDiagShow(env *Env) *ffcli.Command {
	var cc cloudConn
	var wait time.Duration
	return newVerb(env, "cloud diagnostics", verb{
		name:  "show",
		args:  "ID",
		short: "Show a diagnostics request and its outcome.",
		long: `Shows one diagnostics request: its state (pending, succeeded, failed, timed_out), the
app's result or error.

EXAMPLES
  moat cloud diagnostics show dgn_01jf...
  moat cloud diagnostics show dgn_01jf... --wait 30s -o json`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.DurationVar(&wait, "wait", 0, "wait up to `DURATION` (at most 60s) for a pending request to finish")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) != 1 {
				return usagef("moat cloud diagnostics show takes one ID")
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			d, err := c.GetDiagnostic(ctx, args[0], wait)
			if err != nil {
				return err
			}
			return showDiagnostic(s, d)
		},
	})
}

func newCloudDiagList(env *Env) *ffcli.Command {
	var cc cloudConn
	var device string
	var limit int
	return newVerb(env, "cloud diagnostics", verb{
		name:  "list",
		short: "List diagnostics requests, newest first.",
		long: `Lists diagnostics requests, newest first, those of the rules' actions and of people alike.

EXAMPLES
  moat cloud diagnostics list
  moat cloud diagnostics list --device 3f9a...e1 -o json`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&device, "device", "", "only this `DEVICE`")
			fs.IntVar(&limit, "limit", 100, "show at most `N` requests (1 to 1000)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 0 {
				return usagef("moat cloud diagnostics list takes no arguments")
			}
			if limit < 1 || limit > 1000 {
				return usagef("--limit must be from 1 to 1000, got %d", limit)
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			page, err := c.ListDiagnostics(ctx, device, client.ListOptions{Limit: limit})
			if err != nil {
				return err
			}
			return printList(s, page.Items, []string{"ID", "REQUESTED", "DEVICE", "COMMAND", "STATE", "BY"}, func(d client.Diagnostic) []string {
				return []string{d.ID, fmtTime(d.RequestedAt), d.Device, d.Command, d.State, d.RequestedBy}
			})
		},
	})
}

func newCloudRules(env *Env) *ffcli.Command {
	return subNoun(newNoun(env, "cloud rules", "Check rule files.",
		`Rule files declare, per product, what the cloud watches for: thresholds sustained for a
time, rates of change, missing data, and readings unusual against the product's fleet.
docs/cloud.md is the reference.

EXAMPLES
  moat cloud rules check examples/dw100/rules.yaml`,
		newCloudRulesCheck(env)))
}

func newCloudRulesCheck(env *Env) *ffcli.Command {
	return newVerb(env, "cloud rules", verb{
		name:  "check",
		args:  "FILE...",
		short: "Validate rule files; every problem is printed with its line.",
		long: `Reads each rule file as 'moat cloud --rules' would and prints every problem with its file
and line, or the rules it holds. The exit status is non-zero when a file has a problem.

EXAMPLES
  moat cloud rules check examples/dw100/rules.yaml`,
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) == 0 {
				return usagef("moat cloud rules check takes one or more FILEs")
			}
			var bad []error
			type checked struct {
				File    string   `json:"file"`
				Product string   `json:"product"`
				Rules   []string `json:"rules"`
			}
			var ok []checked
			for _, path := range args {
				data, err := os.ReadFile(path)
				if err != nil {
					bad = append(bad, err)
					continue
				}
				f, err := rules.Parse(data, filepath.Base(path), rules.StandardActions())
				if err != nil {
					bad = append(bad, err)
					continue
				}
				c := checked{File: path, Product: f.Product}
				for _, r := range f.Rules {
					c.Rules = append(c.Rules, r.Name)
				}
				ok = append(ok, c)
			}
			if err := errors.Join(bad...); err != nil {
				return &cliError{code: ExitUsage, msg: err.Error()}
			}
			return printList(s, ok, []string{"FILE", "PRODUCT", "RULES"}, func(c checked) []string {
				return []string{c.File, c.Product, strings.Join(c.Rules, ", ")}
			})
		},
	})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
