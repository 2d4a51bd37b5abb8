package cloud

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Config is what `moat cloud` is started with. Its JSON keys are the flag names.
type Config struct {
	// Addr is the HTTPS listener of the cloud's API (telemetry, alerts, diagnostics),
	// health and metrics.
	Addr string `json:"addr"`
	// MQTTAddr is the devices' MQTT listener (MQTT 3.1.1 over TLS, device certificates).
	MQTTAddr string `json:"mqtt-addr"`
	// DataDir holds the SQLite database, the broker's JetStream store and the local TLS CA.
	DataDir string `json:"data"`
	// Database is empty (SQLite in DataDir), a SQLite file path, or a postgres:// URL.
	Database string `json:"database"`
	// DeviceCA is the PEM chain `moat ca-certificate download` writes: the tenant's device
	// CAs and the platform root. It is the only thing the cloud trusts devices by.
	DeviceCA string `json:"device-ca"`
	// Server is the security service's management URL; the tenant's staff sign in to the
	// cloud's API with their moat token, which the cloud checks there. ServerCA, optional,
	// is the PEM file of the CA that service's certificate chains to (its DATA/tls/ca.pem).
	Server   string `json:"server"`
	ServerCA string `json:"server-ca"`
	// TLSCert and TLSKey replace the local CA with an operator's certificate (PEM files),
	// for both listeners. TLSHosts are further names the local CA's certificate covers.
	TLSCert  string   `json:"tls-cert"`
	TLSKey   string   `json:"tls-key"`
	TLSHosts []string `json:"tls-hosts"`
	// Rules are rule files, one per product (docs/cloud.md).
	Rules []string `json:"rules"`
	// RawRetention is how long raw readings are kept; SummaryRetention how long the per
	// cycle and hourly summaries are.
	RawRetention     time.Duration `json:"raw-retention"`
	SummaryRetention time.Duration `json:"summary-retention"`
	// DiagnosticsTimeout is how long a diagnostics request waits for the device's answer
	// when the caller names no timeout.
	DiagnosticsTimeout time.Duration `json:"diagnostics-timeout"`
	// SyncAlways fsyncs every message the broker stores before it acknowledges it to the
	// device, at about a tenth of the throughput. Off (the default), each message is
	// written to the file before its PUBACK, so a crash or kill of the process loses
	// nothing acknowledged, and the store is fsynced every SyncInterval: a power cut can
	// lose what was acknowledged within that interval.
	SyncAlways   bool          `json:"sync-always"`
	SyncInterval time.Duration `json:"sync-interval"`
	// MaxMessagesPerDevice caps the messages of one device held in the broker's stream.
	MaxMessagesPerDevice int64 `json:"max-messages-per-device"`
	// DeviceRate and DeviceBurst limit the messages per second the ingest stores from one
	// device; past it they are dropped and counted.
	DeviceRate  float64 `json:"device-rate"`
	DeviceBurst int     `json:"device-burst"`
	// ServerName, ClusterName, ClusterAddr, Routes and ClusterSecretFile join the embedded
	// NATS servers of several `moat cloud` processes into one NATS cluster, whose streams
	// StreamReplicas servers keep (docs/cloud.md, scale-out).
	ServerName        string   `json:"server-name"`
	ClusterName       string   `json:"cluster-name"`
	ClusterAddr       string   `json:"cluster-addr"`
	Routes            []string `json:"routes"`
	ClusterSecretFile string   `json:"cluster-secret-file"`
	StreamReplicas    int      `json:"stream-replicas"`
	// PortalURL is the public https base URL of the owners' portal and the support view
	// (the cloud's own address when empty), for the links in mail.
	PortalURL string `json:"portal-url"`
	// SessionKeyFile holds the 32-byte key that seals the support view's sessions (created,
	// 0600, in DataDir when empty). Replicas sharing a database need the same file.
	SessionKeyFile string `json:"session-key-file"`
	// SMTP* is the mail submission server the cloud sends owners' mail through (STARTTLS
	// required unless SMTPTLS says otherwise). Without SMTPAddr mail waits in the outbox.
	SMTPAddr         string `json:"smtp-addr"`
	SMTPFrom         string `json:"smtp-from"`
	SMTPUsername     string `json:"smtp-username"`
	SMTPPasswordFile string `json:"smtp-password-file"`
	SMTPTLS          string `json:"smtp-tls"`
	SMTPCA           string `json:"smtp-ca"`
	// Webhooks are NAME=URL endpoints that receive the cloud's events, each signed with the
	// secret in the file WebhookSecretFiles names for it (NAME=FILE).
	Webhooks           []string `json:"webhooks"`
	WebhookSecretFiles []string `json:"webhook-secret-files"`
	// Shops is the repair shops file (docs/repair-shop-api.md).
	Shops string `json:"shops"`
	// LogLevel is debug, info, warn or error; LogFormat is text or json.
	LogLevel  string `json:"log-level"`
	LogFormat string `json:"log-format"`
	// MetricsTokenFile is a file (0600) holding the token /metrics requires.
	MetricsTokenFile string `json:"metrics-token-file"`
	// ShutdownTimeout bounds how long in-flight requests may take on shutdown.
	ShutdownTimeout time.Duration `json:"shutdown-timeout"`
	// Now is the cloud's clock; nil means time.Now.
	Now func() time.Time `json:"-"`
}

// DefaultConfig returns the embedded defaults.
func DefaultConfig() Config {
	return Config{
		Addr:                 "127.0.0.1:8446",
		MQTTAddr:             "127.0.0.1:8883",
		DataDir:              "./moat-cloud-data",
		RawRetention:         7 * 24 * time.Hour,
		SummaryRetention:     400 * 24 * time.Hour,
		DiagnosticsTimeout:   2 * time.Minute,
		SyncInterval:         time.Second,
		MaxMessagesPerDevice: 10_000,
		DeviceRate:           10,
		DeviceBurst:          100,
		LogLevel:             "info",
		LogFormat:            "text",
		ShutdownTimeout:      20 * time.Second,
	}
}

var clusterNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate reports every problem with the configuration, each with its flag name.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	_, apiPort, err := net.SplitHostPort(c.Addr)
	if err != nil {
		bad("addr", "must be host:port, got %q", c.Addr)
	}
	if _, mqttPort, err := net.SplitHostPort(c.MQTTAddr); err != nil {
		bad("mqtt-addr", "must be host:port, got %q", c.MQTTAddr)
	} else if mqttPort == apiPort && mqttPort != "0" {
		bad("mqtt-addr", "must differ from addr (%s)", c.Addr)
	}
	if c.DataDir == "" {
		bad("data", "must not be empty")
	}
	if strings.Contains(c.Database, "://") && !strings.HasPrefix(c.Database, "postgres://") &&
		!strings.HasPrefix(c.Database, "postgresql://") {
		bad("database", "must be a SQLite file path or postgres://...")
	}
	if c.DeviceCA == "" {
		bad("device-ca", "required: the PEM chain 'moat ca-certificate download' writes")
	}
	if u, err := url.Parse(c.Server); c.Server == "" || err != nil || u.Scheme != "https" || u.Host == "" {
		bad("server", "required: the security service's https:// management URL, where staff tokens are checked")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls-cert", "tls-cert and tls-key must be given together")
	}
	for _, h := range c.TLSHosts {
		if h == "" || strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
			bad("tls-hosts", "%q is not a DNS name or an IP address", h)
		}
	}
	if c.RawRetention < time.Hour || c.RawRetention > 10*365*24*time.Hour {
		bad("raw-retention", "must be between 1h and 87600h, got %s", c.RawRetention)
	}
	if c.SummaryRetention < c.RawRetention || c.SummaryRetention > 20*365*24*time.Hour {
		bad("summary-retention", "must be at least raw-retention (%s) and at most 175200h, got %s", c.RawRetention, c.SummaryRetention)
	}
	if c.DiagnosticsTimeout < time.Second || c.DiagnosticsTimeout > 24*time.Hour {
		bad("diagnostics-timeout", "must be between 1s and 24h, got %s", c.DiagnosticsTimeout)
	}
	if c.SyncInterval < 10*time.Millisecond || c.SyncInterval > 2*time.Minute {
		bad("sync-interval", "must be between 10ms and 2m, got %s", c.SyncInterval)
	}
	if c.MaxMessagesPerDevice < 100 || c.MaxMessagesPerDevice > 10_000_000 {
		bad("max-messages-per-device", "must be between 100 and 10000000, got %d", c.MaxMessagesPerDevice)
	}
	if c.DeviceRate <= 0 || c.DeviceRate > 10_000 {
		bad("device-rate", "must be above 0 and at most 10000 messages per second, got %g", c.DeviceRate)
	}
	if c.DeviceBurst < 1 || c.DeviceBurst > 100_000 {
		bad("device-burst", "must be between 1 and 100000, got %d", c.DeviceBurst)
	}
	if c.StreamReplicas < 0 || c.StreamReplicas > 5 {
		bad("stream-replicas", "must be 0 to 5, got %d", c.StreamReplicas)
	}
	if c.ClusterName != "" || c.ClusterAddr != "" || len(c.Routes) > 0 || c.ClusterSecretFile != "" || c.ServerName != "" {
		if !clusterNameRE.MatchString(c.ServerName) {
			bad("server-name", "required in a cluster: 1 to 64 letters, digits, '_' or '-', unique per process")
		}
		if c.ClusterSecretFile == "" {
			bad("cluster-secret-file", "required in a cluster: a file (0600) with the secret every cluster member presents on its routes")
		}
		if !clusterNameRE.MatchString(c.ClusterName) {
			bad("cluster-name", "required with cluster-addr and routes: 1 to 64 letters, digits, '_' or '-'")
		}
		if _, _, err := net.SplitHostPort(c.ClusterAddr); err != nil {
			bad("cluster-addr", "must be host:port, got %q", c.ClusterAddr)
		}
		for _, r := range c.Routes {
			if u, err := url.Parse(r); err != nil || u.Scheme != "nats-route" && u.Scheme != "nats" || u.Host == "" {
				bad("routes", "%q must be nats-route://HOST:PORT", r)
			}
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log-format", "must be text or json, got %q", c.LogFormat)
	}
	if c.PortalURL != "" {
		if u, err := url.Parse(c.PortalURL); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad("portal-url", "must be an https:// base URL, got %q", c.PortalURL)
		}
	}
	if c.SMTPAddr == "" && (c.SMTPFrom != "" || c.SMTPUsername != "" || c.SMTPPasswordFile != "" || c.SMTPCA != "" || c.SMTPTLS != "") {
		bad("smtp-addr", "required with the other smtp- settings")
	}
	names := map[string]bool{}
	for _, w := range c.Webhooks {
		name, u, ok := strings.Cut(w, "=")
		if !ok || name == "" || u == "" {
			bad("webhooks", "%q must be NAME=URL", w)
			continue
		}
		names[name] = true
	}
	secrets := map[string]bool{}
	for _, w := range c.WebhookSecretFiles {
		name, f, ok := strings.Cut(w, "=")
		switch {
		case !ok || name == "" || f == "":
			bad("webhook-secret-files", "%q must be NAME=FILE", w)
		case !names[name]:
			bad("webhook-secret-files", "%q names no webhook", name)
		default:
			secrets[name] = true
		}
	}
	for n := range names {
		if !secrets[n] {
			bad("webhook-secret-files", "webhook %q needs a secret file (NAME=FILE)", n)
		}
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", "must be positive")
	}
	return errors.Join(errs...)
}

// Redacted returns the config with a database password, and any user info or query of a
// webhook URL (where receivers often put a token), masked, for printing.
func (c Config) Redacted() Config {
	hooks := make([]string, len(c.Webhooks))
	for i, w := range c.Webhooks {
		name, raw, _ := strings.Cut(w, "=")
		if u, err := url.Parse(raw); err == nil && (u.User != nil || u.RawQuery != "") {
			if u.User != nil {
				u.User = url.User("REDACTED")
			}
			if u.RawQuery != "" {
				u.RawQuery = "REDACTED"
			}
			raw = u.String()
		}
		hooks[i] = name + "=" + raw
	}
	if c.Webhooks != nil {
		c.Webhooks = hooks
	}
	if u, err := url.Parse(c.Database); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
			c.Database = u.String()
		}
	}
	return c
}
