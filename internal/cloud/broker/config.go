package broker

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
)

// Defaults of the stream limits (DefaultConfig and docs/cloud.md).
const (
	// DefaultMaxMsgsPerDevice bounds what one device keeps in the stream per subject
	// (its telemetry, its events, its reply to one request) until the ingest has it.
	DefaultMaxMsgsPerDevice = 10_000
	// DefaultMaxAge bounds how long the stream keeps a message the ingest has not taken.
	DefaultMaxAge = 7 * 24 * time.Hour
	// DefaultSyncInterval is how often the store is fsynced without SyncAlways.
	DefaultSyncInterval = time.Second
	// DefaultMaxBytes bounds the whole stream.
	DefaultMaxBytes = 10 << 30
	// MaxRetainedBytes bounds the store of retained messages: no subscriber can ever
	// receive one (see the package doc), so they are kept only because nats-server's
	// MQTT does, and kept small.
	MaxRetainedBytes = 1 << 20
)

// Config is what Open needs. Every field without "optional" is required.
type Config struct {
	// MQTTAddr is host:port of the MQTT over TLS listener ("127.0.0.1:0" in tests).
	MQTTAddr string
	// ServerCert is the broker's own TLS certificate, presented to devices.
	ServerCert tls.Certificate
	// DeviceCAs is the PEM chain `moat ca-certificate download` writes: the tenant's
	// device CA certificates, newest first, then the platform root (last). It is the
	// one thing the broker trusts (DESIGN rule 1).
	DeviceCAs []byte
	// TenantID, optional: when set, the CAs and every device must be of this tenant.
	// When empty, the tenant is the one the CA certificates name (they must agree).
	TenantID string
	// StoreDir is JetStream's directory: the stream, MQTT sessions and their
	// consumers. It must survive a restart for QoS 1 messages and sessions to.
	StoreDir string
	// Now is the clock certificates are checked against.
	Now func() time.Time
	// Logger receives the broker's own log lines and nats-server's (at Warn and up,
	// debug when its level is Debug).
	Logger *slog.Logger
	// OnConnect, optional, is called after a device is admitted, before its CONNACK.
	// It runs on the connection's goroutine: it must not block.
	OnConnect func(Device)
	// SyncAlways fsyncs every stored message before it is acknowledged, at about a
	// tenth of the throughput (BenchmarkBroker_PublishQoS1). Off, each message is still
	// written to the file (the operating system's cache) before its PUBACK, so a crash or
	// kill of the process loses nothing acknowledged; JetStream fsyncs every
	// SyncInterval, and a power loss can lose what was acknowledged since.
	SyncAlways bool
	// SyncInterval, optional, is how often JetStream fsyncs without SyncAlways
	// (DefaultSyncInterval).
	SyncInterval time.Duration
	// MaxMsgsPerDevice bounds the messages the stream keeps per device subject; the
	// oldest of that subject are dropped first (DiscardOld), so a flooding device
	// pushes out only its own messages.
	MaxMsgsPerDevice int64
	// MaxAge and MaxBytes bound the stream as a whole.
	MaxAge   time.Duration
	MaxBytes int64

	// ServerName names this server in a cluster; required with ClusterListen.
	ServerName string
	// ClusterName, ClusterListen (host:port for routes from the other servers),
	// Routes (nats-route://host:port of each other server) and ClusterSecret (the
	// password every server of the cluster presents on its routes) make the
	// embedded servers of several moat cloud processes one NATS cluster. All
	// optional; ClusterListen needs the other three.
	ClusterName   string
	ClusterListen string
	Routes        []string
	ClusterSecret string
	// StreamReplicas, optional, is the number of servers that keep each stream (1
	// when 0; 3 in a cluster of three or more).
	StreamReplicas int
}

// DefaultConfig is the configuration moat cloud starts from: the caller adds the
// listener, the certificates, the store directory, the clock and the logger.
func DefaultConfig() Config {
	return Config{
		SyncInterval:     DefaultSyncInterval,
		MaxMsgsPerDevice: DefaultMaxMsgsPerDevice,
		MaxAge:           DefaultMaxAge,
		MaxBytes:         DefaultMaxBytes,
	}
}

// Device is a device the broker admitted.
type Device struct {
	ID      string
	Tenant  string
	Product string
	// CertNotAfter ends the connection (User.ConnectionDeadline).
	CertNotAfter time.Time
	// Serial is the certificate's serial number in hex, as deviceca.Issue returns it.
	Serial string
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Validate returns every problem of c as one error.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(c.MQTTAddr); err != nil {
		add("mqtt_addr %q: %w", c.MQTTAddr, err)
	}
	if len(c.ServerCert.Certificate) == 0 || c.ServerCert.PrivateKey == nil {
		add("server_cert: no certificate or key")
	}
	if _, err := parseTrust(c.DeviceCAs, c.TenantID); err != nil {
		add("device_cas: %w", err)
	}
	if c.StoreDir == "" {
		add("store_dir: not set")
	}
	if c.Now == nil {
		add("now: no clock")
	}
	if c.Logger == nil {
		add("logger: not set")
	}
	if c.MaxMsgsPerDevice <= 0 {
		add("max_msgs_per_device %d: want more than 0", c.MaxMsgsPerDevice)
	}
	if c.SyncInterval < 0 {
		add("sync_interval %v: must not be negative", c.SyncInterval)
	}
	if c.MaxAge <= 0 {
		add("max_age %v: want more than 0", c.MaxAge)
	}
	if c.MaxBytes <= 0 {
		add("max_bytes %d: want more than 0", c.MaxBytes)
	}
	if c.StreamReplicas < 0 || c.StreamReplicas > 5 {
		add("stream_replicas %d: want 0 to 5", c.StreamReplicas)
	}
	errs = append(errs, c.validateCluster()...)
	return errors.Join(errs...)
}

func (c Config) validateCluster() []error {
	var errs []error
	if c.ClusterListen == "" {
		if c.ClusterName != "" || len(c.Routes) > 0 || c.ClusterSecret != "" {
			errs = append(errs, errors.New("cluster_listen: not set, but other cluster settings are"))
		}
		return errs
	}
	if _, _, err := net.SplitHostPort(c.ClusterListen); err != nil {
		errs = append(errs, fmt.Errorf("cluster_listen %q: %w", c.ClusterListen, err))
	}
	if !nameRE.MatchString(c.ClusterName) {
		errs = append(errs, fmt.Errorf("cluster_name %q: want 1 to 64 of A-Z a-z 0-9 _ . -", c.ClusterName))
	}
	if !nameRE.MatchString(c.ServerName) {
		errs = append(errs, fmt.Errorf("server_name %q: want 1 to 64 of A-Z a-z 0-9 _ . - (unique in the cluster)", c.ServerName))
	}
	// Routes carry every device's messages and may create streams: a route that
	// authenticates with nothing would let anyone on the network read the fleet.
	if len(c.ClusterSecret) < 32 {
		errs = append(errs, errors.New("cluster_secret: want at least 32 characters"))
	}
	if len(c.Routes) == 0 {
		// nats-server refuses clustered JetStream without routes.
		errs = append(errs, errors.New("routes: want the other servers of the cluster"))
	}
	for _, r := range c.Routes {
		if !strings.HasPrefix(r, "nats-route://") && !strings.HasPrefix(r, "nats://") {
			errs = append(errs, fmt.Errorf("routes: %q: want nats-route://host:port", r))
		}
	}
	return errs
}

// trust is the parsed DeviceCAs.
type trust struct {
	root   *x509.Certificate
	cas    []*x509.Certificate
	tenant string
}

// maxCAs bounds the CA certificates of a chain file: a tenant rotates its CA rarely.
const maxCAs = 16

// parseTrust reads the chain file: CA certificates, then the root. Every CA must be a
// CA that names one tenant, the same for all, and tenant when it is set. Whether a CA
// chains to the root is checked for each device by deviceca.VerifyDevice (a CA that
// does not only ever fails).
func parseTrust(data []byte, tenant string) (trust, error) {
	var blocks []*pem.Block
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(strings.TrimSpace(string(rest))) != 0 {
				return trust{}, errors.New("data that is not PEM")
			}
			break
		}
		if b.Type != "CERTIFICATE" {
			return trust{}, fmt.Errorf("PEM block %q, want CERTIFICATE", b.Type)
		}
		blocks = append(blocks, b)
		if len(blocks) > maxCAs+1 {
			return trust{}, fmt.Errorf("more than %d CA certificates", maxCAs)
		}
	}
	if len(blocks) < 2 {
		return trust{}, errors.New("want at least one tenant CA certificate and the root")
	}
	root, err := deviceca.ParseRootCertificate(pem.EncodeToMemory(blocks[len(blocks)-1]))
	if err != nil {
		return trust{}, fmt.Errorf("last certificate: %w", err)
	}
	t := trust{root: root, tenant: tenant}
	for i, b := range blocks[:len(blocks)-1] {
		ca, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return trust{}, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		if !ca.IsCA {
			return trust{}, fmt.Errorf("certificate %d: not a CA", i+1)
		}
		tn, err := caTenant(ca)
		if err != nil {
			return trust{}, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		if t.tenant == "" {
			t.tenant = tn
		}
		if tn != t.tenant {
			return trust{}, fmt.Errorf("certificate %d: CA of tenant %s, want %s", i+1, tn, t.tenant)
		}
		t.cas = append(t.cas, ca)
	}
	return t, nil
}

// caTenant returns the tenant a tenant CA's subject names (O=tenant <id>).
func caTenant(ca *x509.Certificate) (string, error) {
	if len(ca.Subject.Organization) != 1 {
		return "", errors.New("CA subject: want one O")
	}
	tn, ok := strings.CutPrefix(ca.Subject.Organization[0], "tenant ")
	if !ok || tn == "" {
		return "", fmt.Errorf("CA subject O %q: want \"tenant <id>\"", ca.Subject.Organization[0])
	}
	return tn, nil
}
