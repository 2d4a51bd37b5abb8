package server

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/blob/s3blob"
	"github.com/moat-iot/moat/internal/fleet/nonce"
	"github.com/moat-iot/moat/internal/repo"
)

// Config is everything `moat server` is built from. DefaultConfig alone runs the server on
// embedded defaults (SQLite and a local CA under ./moat-data). The JSON names are the
// config-file keys and flags (internal/cli serverFlags), and Validate names fields by them.
type Config struct {
	// Addr is the management listener (HTTPS, no client certificates): the management API,
	// its OpenAPI document, health and metrics.
	Addr string `json:"addr"`
	// DeviceAddr is the device listener (HTTPS asking for client certificates): the device
	// API and health. Browsers never reach it, so they are never asked for a certificate.
	DeviceAddr string `json:"device-addr"`
	// DataDir holds the SQLite database and the local TLS CA.
	DataDir string `json:"data"`
	// Database is empty (SQLite in DataDir), a SQLite file path, or a postgres:// URL.
	// It may hold a password: give it by MOAT_DATABASE rather than a flag.
	Database string `json:"database"`
	// TLSCert and TLSKey replace the local CA with an operator's certificate (PEM files).
	TLSCert string `json:"tls-cert"`
	TLSKey  string `json:"tls-key"`
	// TLSHosts are further DNS names and IP addresses the local CA's server certificate
	// covers, besides localhost, 127.0.0.1, ::1 and the listen host (ignored with TLSCert).
	TLSHosts []string `json:"tls-hosts"`
	// OnlineKey is the online signing key's file (unencrypted, 0600); empty means
	// DATA/keys/online.key, created at the first start.
	OnlineKey string `json:"online-key"`
	// CAKeyKEK is the file of the 32-byte key that wraps tenant device-CA private keys in
	// the database (0600); empty means DATA/keys/ca.kek, created at the first start.
	// Replicas that share a database must share it, as they share OnlineKey.
	CAKeyKEK string `json:"ca-kek"`
	// CertLifetime is the lifetime of device certificates issued after attestation.
	CertLifetime time.Duration `json:"certificate-lifetime"`
	// LogLevel is debug, info, warn or error; LogFormat is text or json.
	LogLevel  string `json:"log-level"`
	LogFormat string `json:"log-format"`
	// MetricsTokenFile is a file (0600) holding the token /metrics requires as
	// "Authorization: Bearer TOKEN"; empty leaves /metrics open to anyone who reaches the
	// management listener (it shows request counts and the Go and process figures).
	MetricsTokenFile string `json:"metrics-token-file"`
	// DefaultStorageQuotaBytes is the storage quota of tenants for which the platform
	// operator set none (moat tenant update --storage-quota).
	DefaultStorageQuotaBytes int64 `json:"default-storage-quota-bytes"`
	// MaxUnauthenticatedRequests caps the requests served at once on routes that need no
	// credential (attestation nonces, attestation); past it they are answered 503 with
	// Retry-After.
	MaxUnauthenticatedRequests int `json:"max-unauthenticated-requests"`
	// AttestationNoncesPerMinute is how many attestation nonces each device ID may ask for
	// per minute on one replica; past it 503 with Retry-After.
	AttestationNoncesPerMinute int `json:"attestation-nonces-per-minute"`
	// ErrorReportRetention is how long the server keeps an error report after receiving
	// it; a background job deletes older ones and takes them out of their issues.
	ErrorReportRetention time.Duration `json:"error-report-retention"`
	// S3Endpoint, when set, keeps image blobs in an S3-compatible bucket instead of
	// DATA/blobs, so that replicas sharing a PostgreSQL database share them too:
	// https://host[:port] (http:// on a loopback address only).
	S3Endpoint string `json:"s3-endpoint"`
	// S3Bucket is the bucket (it must exist); S3Region its region (empty: us-east-1);
	// S3Prefix is put before every key (empty or ending in "/").
	S3Bucket string `json:"s3-bucket"`
	S3Region string `json:"s3-region"`
	S3Prefix string `json:"s3-prefix"`
	// S3CredentialsFile is a file (0600) of two lines: the access key ID, then the secret
	// access key.
	S3CredentialsFile string `json:"s3-credentials-file"`
	// S3CAFile is a PEM file of the CA certificates that verify the S3 endpoint's TLS
	// certificate; empty: the system's.
	S3CAFile string `json:"s3-ca-file"`
	// RolloutAdvanceInterval is how often a replica looks at the running staged rollouts
	// (the rollout-advance job's lease period): a stage opens at most this long after its
	// soak ended, and a killed replica's lease lapses within it.
	RolloutAdvanceInterval time.Duration `json:"rollout-advance-interval"`
	// AuthCacheTTL is how long a verified API token is trusted without reading the
	// database again (internal/api/mgmt). A revocation or role change clears it at once on
	// every replica (LISTEN/NOTIFY with PostgreSQL); the TTL bounds staleness only when such
	// a notification is lost.
	AuthCacheTTL time.Duration `json:"auth-cache-ttl"`
	// Pprof, when set, is a loopback host:port serving Go's runtime profiles under
	// /debug/pprof/ (pprof.go); empty: off.
	Pprof string `json:"pprof"`
	// Now is the server's clock; nil means time.Now. Tests move it to expire certificates.
	Now func() time.Time `json:"-"`
	// ShutdownTimeout bounds how long in-flight requests may take to finish on shutdown.
	ShutdownTimeout time.Duration `json:"shutdown-timeout"`
}

// DefaultConfig returns the embedded defaults.
func DefaultConfig() Config {
	return Config{
		Addr:            "127.0.0.1:8443",
		DeviceAddr:      "127.0.0.1:8444",
		DataDir:         "./moat-data",
		LogLevel:        "info",
		LogFormat:       "text",
		ShutdownTimeout: 20 * time.Second,
		CertLifetime:    24 * time.Hour,

		DefaultStorageQuotaBytes:   repo.DefaultStorageQuotaBytes,
		MaxUnauthenticatedRequests: mgmt.DefaultMaxUnauthenticatedRequests,
		AttestationNoncesPerMinute: nonce.PerWindow,
		ErrorReportRetention:       DefaultErrorReportRetention,
		RolloutAdvanceInterval:     RolloutAdvanceInterval,
		AuthCacheTTL:               mgmt.DefaultAuthCacheTTL,
	}
}

// Validate reports every problem with the configuration, each with the config key (the
// flag name) a user types to fix it.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	_, addrPort, err := net.SplitHostPort(c.Addr)
	if err != nil {
		bad("addr", "must be host:port, got %q", c.Addr)
	}
	_, devPort, err := net.SplitHostPort(c.DeviceAddr)
	if err != nil {
		bad("device-addr", "must be host:port, got %q", c.DeviceAddr)
	} else if devPort == addrPort && devPort != "0" && sameHost(c.Addr, c.DeviceAddr) {
		bad("device-addr", "must differ from addr (%s): the device API has its own listener", c.Addr)
	}
	if c.DataDir == "" {
		bad("data", "must not be empty")
	}
	if strings.Contains(c.Database, "://") && !strings.HasPrefix(c.Database, "postgres://") &&
		!strings.HasPrefix(c.Database, "postgresql://") && !strings.HasPrefix(c.Database, "sqlite://") {
		bad("database", "must be a SQLite file path, sqlite://PATH or postgres://...")
	}
	for _, h := range c.TLSHosts {
		if h == "" || strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
			bad("tls-hosts", "%q is not a DNS name or an IP address", h)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls-cert", "tls-cert and tls-key must be given together")
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
	if c.CertLifetime < 5*time.Minute || c.CertLifetime > 30*24*time.Hour {
		bad("certificate-lifetime", "must be between 5m and 720h, got %s", c.CertLifetime)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", "must be positive")
	}
	if c.DefaultStorageQuotaBytes < 0 {
		bad("default-storage-quota-bytes", "must not be negative, got %d", c.DefaultStorageQuotaBytes)
	}
	if c.AttestationNoncesPerMinute < 1 || c.AttestationNoncesPerMinute > 1<<16 {
		bad("attestation-nonces-per-minute", "must be between 1 and 65536, got %d", c.AttestationNoncesPerMinute)
	}
	if c.MaxUnauthenticatedRequests < 1 || c.MaxUnauthenticatedRequests > 1<<16 {
		bad("max-unauthenticated-requests", "must be between 1 and 65536, got %d", c.MaxUnauthenticatedRequests)
	}
	if c.ErrorReportRetention < 24*time.Hour || c.ErrorReportRetention > 10*365*24*time.Hour {
		bad("error-report-retention", "must be between 24h and 87600h (ten years), got %s", c.ErrorReportRetention)
	}
	if d := c.RolloutAdvanceInterval; d != 0 && (d < MinRolloutAdvanceInterval || d > time.Hour) {
		bad("rollout-advance-interval", "must be 0 (the default, %s) or between %s and 1h, got %s", RolloutAdvanceInterval, MinRolloutAdvanceInterval, d)
	}
	if c.AuthCacheTTL < time.Second || c.AuthCacheTTL > mgmt.MaxAuthCacheTTL {
		bad("auth-cache-ttl", "must be between 1s and %s, got %s", mgmt.MaxAuthCacheTTL, c.AuthCacheTTL)
	}
	if c.Pprof != "" {
		if err := checkPprofAddr(c.Pprof); err != nil {
			bad("pprof", "%v", err)
		}
	}
	errs = append(errs, c.validateS3()...)
	return errors.Join(errs...)
}

// validateS3 checks the blob store settings: all S3 ones need s3-endpoint, and with it a
// bucket and a credentials file.
func (c Config) validateS3() []error {
	var errs []error
	if c.S3Endpoint == "" {
		if c.S3Bucket != "" || c.S3Region != "" || c.S3Prefix != "" || c.S3CredentialsFile != "" || c.S3CAFile != "" {
			errs = append(errs, errors.New("s3-endpoint: required with the other s3-* settings"))
		}
		return errs
	}
	// The shape of endpoint, bucket and prefix; the credentials are read at start-up.
	shape := s3blob.Config{Endpoint: c.S3Endpoint, Bucket: c.S3Bucket, Region: c.S3Region, Prefix: c.S3Prefix, AccessKey: "-", SecretKey: "-"}
	if err := shape.Validate(); err != nil {
		for _, e := range unjoin(err) {
			errs = append(errs, fmt.Errorf("s3: %w", e))
		}
	}
	if c.S3CredentialsFile == "" {
		errs = append(errs, errors.New("s3-credentials-file: required with s3-endpoint"))
	}
	return errs
}

// unjoin splits an errors.Join error into its parts.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// sameHost reports whether two host:port addresses name the same host, or one of them
// every host (an empty or unspecified host), so that equal ports collide.
func sameHost(a, b string) bool {
	ha, _, _ := net.SplitHostPort(a)
	hb, _, _ := net.SplitHostPort(b)
	unspecified := func(h string) bool { ip := net.ParseIP(h); return h == "" || ip != nil && ip.IsUnspecified() }
	return ha == hb || unspecified(ha) || unspecified(hb)
}

func (c Config) databaseKind() string {
	if strings.HasPrefix(c.Database, "postgres") {
		return "postgres"
	}
	return "sqlite"
}

func (c Config) blobKind() string {
	if c.S3Endpoint != "" {
		return "s3"
	}
	return "file"
}

// Redacted returns the config with secrets (a database password) masked, for printing.
func (c Config) Redacted() Config {
	if u, err := url.Parse(c.Database); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
			c.Database = u.String()
		}
	}
	if strings.Contains(c.Database, "password=") {
		fields := strings.Fields(c.Database)
		for i, f := range fields {
			if strings.HasPrefix(f, "password=") {
				fields[i] = "password=REDACTED"
			}
		}
		c.Database = strings.Join(fields, " ")
	}
	return c
}
