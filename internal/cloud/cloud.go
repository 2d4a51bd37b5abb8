// Package cloud is the composition root of `moat cloud`, the tenant's manufacturer cloud:
// it builds the embedded MQTT broker (internal/cloud/broker), the cloud's database
// (internal/cloud/cloudstore), the durable ingest (internal/cloud/ingest), the rules engine
// (internal/cloud/rules), remote diagnostics (internal/cloud/diag) and the HTTPS API
// (internal/api/cloudapi) from a Config, and wires them: wiring, no business logic.
//
// Data flow: a device publishes on its MQTT topics → the broker stores the QoS 1 message in
// JetStream and only then PUBACKs → the ingest fetches batches, writes them in one
// transaction, acknowledges them → the hook hands the new samples to the rules engine,
// whose transitions open and clear alerts and run their actions (diagnostics), and the
// replies to the diagnostics service. docs/cloud.md describes it for operators.
//
// What it trusts from the security service: the tenant's device CA chain (Config.DeviceCA),
// nothing else for devices; staff tokens are checked with the security service
// (internal/cloud/operator).
package cloud

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moat-iot/moat/internal/api/cloudapi"
	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/cloud/broker"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/diag"
	"github.com/moat-iot/moat/internal/cloud/ingest"
	"github.com/moat-iot/moat/internal/cloud/operator"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/owners"
	"github.com/moat-iot/moat/internal/cloud/portal"
	"github.com/moat-iot/moat/internal/cloud/rules"
	"github.com/moat-iot/moat/internal/cloud/support"
	"github.com/moat-iot/moat/internal/localtls"
)

// Cloud is a running manufacturer cloud.
type Cloud struct {
	// URL is the HTTPS API's base URL; MQTTAddr the devices' listener.
	URL      string
	MQTTAddr string
	// Tenant is the tenant the device CA chain names.
	Tenant string
	// CAFile and CAPEM are the local TLS CA clients pin (empty CAFile with --tls-cert).
	CAFile string
	CAPEM  []byte

	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	http    *http.Server
	broker  *broker.Broker
	nc      *nats.Conn
	store   *cloudstore.Store
	ingest  *ingest.Ingest
	engine  *rules.Engine
	diag    *diag.Service
	actions *actionRunner
	reg     *prometheus.Registry

	// The people's side (people.go).
	ruleFiles []*rules.File
	owners    *owners.Service
	portal    *portal.Portal
	support   *support.Support
	outbox    *outbox.Worker
	webhooks  []string // the webhook endpoints' names
}

// Open builds the cloud from cfg and starts its listeners and the broker; Serve runs it.
// On error everything it started is stopped again.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (c *Cloud, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cloud config: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c = &Cloud{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			c.close()
			c = nil
		}
	}()
	c.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	chain, err := os.ReadFile(cfg.DeviceCA)
	if err != nil {
		return nil, fmt.Errorf("device-ca: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	cert, err := c.tls()
	if err != nil {
		return nil, err
	}
	// Listen before touching the database: a busy address changes nothing.
	if c.ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("addr: %w", err)
	}
	c.URL = "https://" + c.ln.Addr().String()

	if c.store, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	// The rules engine exists before the broker admits anyone: onConnect tells it of
	// each device that connects.
	if c.engine, err = c.rules(); err != nil {
		return nil, err
	}
	bc := broker.DefaultConfig()
	bc.MQTTAddr, bc.ServerCert, bc.DeviceCAs = cfg.MQTTAddr, cert, chain
	bc.StoreDir, bc.Now, bc.Logger = filepath.Join(cfg.DataDir, "jetstream"), cfg.Now, log.With("part", "broker")
	bc.SyncAlways, bc.SyncInterval, bc.MaxMsgsPerDevice = cfg.SyncAlways, cfg.SyncInterval, cfg.MaxMessagesPerDevice
	bc.ServerName, bc.ClusterName, bc.ClusterListen, bc.Routes = cfg.ServerName, cfg.ClusterName, cfg.ClusterAddr, cfg.Routes
	bc.StreamReplicas = cfg.StreamReplicas
	if cfg.ClusterSecretFile != "" {
		s, err := os.ReadFile(cfg.ClusterSecretFile)
		if err != nil {
			return nil, fmt.Errorf("cluster-secret-file: %w", err)
		}
		bc.ClusterSecret = strings.TrimSpace(string(s))
	}
	bc.OnConnect = c.onConnect
	if c.broker, err = broker.Open(bc); err != nil {
		return nil, err
	}
	c.MQTTAddr = c.broker.MQTTAddr().String()
	c.Tenant = c.broker.Tenant()
	if c.nc, err = c.broker.Conn(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, err
	}

	publish := func(ctx context.Context, device, id string, data []byte) error {
		m, err := broker.RequestMsg(device, id, data)
		if err != nil {
			return err
		}
		_, err = js.PublishMsg(ctx, m)
		return err
	}
	if c.diag, err = diag.New(diag.Config{Store: c.store, Publish: publish, Timeout: cfg.DiagnosticsTimeout, Now: cfg.Now, Logger: log.With("part", "diagnostics")}); err != nil {
		return nil, err
	}
	c.actions = &actionRunner{store: c.store, diag: c.diag, log: log.With("part", "rules"), now: cfg.Now}
	if err := c.restoreAlerts(ctx); err != nil {
		return nil, err
	}
	ic := ingest.DefaultConfig()
	ic.DeviceRate, ic.DeviceBurst = cfg.DeviceRate, cfg.DeviceBurst
	ic.RawRetention, ic.SummaryRetention = cfg.RawRetention, cfg.SummaryRetention
	if c.ingest, err = ingest.New(ic, ingest.Deps{JetStream: js, Store: c.store, Logger: log.With("part", "ingest"),
		Registerer: c.reg, Now: cfg.Now, Hook: c.hook}); err != nil {
		return nil, err
	}

	var serverCA []byte
	if cfg.ServerCA != "" {
		if serverCA, err = os.ReadFile(cfg.ServerCA); err != nil {
			return nil, fmt.Errorf("server-ca: %w", err)
		}
	}
	verifier, err := operator.New(operator.Config{Server: cfg.Server, HTTPClient: httpClient(serverCA), Tenant: c.Tenant, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	api, err := cloudapi.New(cloudapi.Config{Store: c.store, Diag: c.diag, Verifier: verifier, Metrics: httpapi.NewMetrics(c.reg), Logger: log, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	api.Register(mux)
	if err := c.openPeople(verifier, mux); err != nil {
		return nil, err
	}
	c.actions.outbox, c.actions.webhooks = c.outbox, c.webhooks
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", c.readyz)
	metrics := promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{})
	if cfg.MetricsTokenFile != "" {
		tok, err := httpapi.ReadTokenFile("metrics-token-file", cfg.MetricsTokenFile)
		if err != nil {
			return nil, err
		}
		metrics = httpapi.RequireToken(tok, metrics)
	}
	mux.Handle("GET /metrics", metrics)
	c.http = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, CipherSuites: strongSuites},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second, // a diagnostics wait holds the answer up to a minute
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return c, nil
}

// strongSuites are the TLS 1.2 suites the cloud's API offers: ECDHE with AEAD only (TLS 1.3
// suites are not configurable and all strong).
var strongSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

func (c *Cloud) tls() (tls.Certificate, error) {
	if c.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.cfg.TLSCert, c.cfg.TLSKey)
		if err != nil {
			return cert, fmt.Errorf("tls-cert: %w", err)
		}
		return cert, nil
	}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, c.cfg.TLSHosts...)
	for _, a := range []string{c.cfg.Addr, c.cfg.MQTTAddr} {
		h, _, _ := net.SplitHostPort(a) // validated
		if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
			hosts = append(hosts, h)
		}
	}
	dir := filepath.Join(c.cfg.DataDir, "tls")
	cert, caPEM, err := localtls.Load(dir, "moat cloud", hosts, c.cfg.Now())
	if err != nil {
		return cert, err
	}
	c.CAFile, c.CAPEM = filepath.Join(dir, "ca.pem"), caPEM
	return cert, nil
}

func openStore(ctx context.Context, cfg Config) (*cloudstore.Store, error) {
	switch {
	case strings.HasPrefix(cfg.Database, "postgres://"), strings.HasPrefix(cfg.Database, "postgresql://"):
		return cloudstore.Open(ctx, cloudstore.Config{Database: cloudstore.Postgres, PostgresDSN: cfg.Database})
	case cfg.Database != "":
		return cloudstore.Open(ctx, cloudstore.Config{Database: cloudstore.SQLite, SQLitePath: cfg.Database})
	}
	return cloudstore.Open(ctx, cloudstore.Config{Database: cloudstore.SQLite, SQLitePath: filepath.Join(cfg.DataDir, "cloud.db")})
}

// rules reads the rule files and builds the engine.
func (c *Cloud) rules() (*rules.Engine, error) {
	var files []*rules.File
	seen := map[string]string{}
	for _, path := range c.cfg.Rules {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		f, err := rules.Parse(data, path, rules.StandardActions())
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		if other, dup := seen[f.Product]; dup {
			return nil, fmt.Errorf("rules: %s and %s both declare product %s", other, path, f.Product)
		}
		seen[f.Product] = path
		files = append(files, f)
	}
	c.ruleFiles = files
	ec := rules.DefaultEngineConfig()
	ec.Files, ec.Now, ec.Logger = files, c.cfg.Now, c.log.With("part", "rules")
	return rules.NewEngine(ec)
}

// onConnect records a device the broker admitted. It runs on the connection's goroutine
// before the CONNACK, so it is bounded by a short timeout; a failure is logged (the
// device's messages are still stored: the ingest takes the product from the record of an
// earlier connection, or drops them as unknown).
func (c *Cloud) onConnect(d broker.Device) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := c.cfg.Now()
	if err := c.store.UpsertDevice(ctx, cloudstore.Device{ID: d.ID, Product: d.Product, CertNotAfter: d.CertNotAfter, CertSerial: d.Serial}, now); err != nil {
		c.log.Error("device connection not recorded", "device", d.ID, "error", err)
		return
	}
	c.engine.Seen(d.Product, d.ID, now)
}

// hook receives each committed batch: samples feed the rules, replies wake waiters.
func (c *Cloud) hook(ctx context.Context, samples []ingest.Sample) {
	var obs []rules.Sample
	for _, s := range samples {
		switch {
		case s.Telemetry != nil:
			rs := make(map[string]float64, len(s.Telemetry.Readings))
			for k, r := range s.Telemetry.Readings {
				rs[k] = r.Value
			}
			obs = append(obs, rules.Sample{Device: s.Device, Product: s.Product, Time: s.Telemetry.Time,
				Cycle: s.Telemetry.Cycle, Phase: s.Telemetry.Phase, Readings: rs})
		case s.Reply != nil:
			c.diag.Finished(s.Reply.ID)
		}
	}
	if len(obs) > 0 {
		c.actions.apply(ctx, c.engine.Observe(obs))
	}
}

// restoreAlerts hands the open alerts to the engine, so that a restart does not fire them
// again.
func (c *Cloud) restoreAlerts(ctx context.Context) error {
	open, err := c.store.OpenAlerts(ctx)
	if err != nil {
		return err
	}
	eps := make([]rules.Episode, 0, len(open))
	for _, a := range open {
		eps = append(eps, rules.Episode{Product: a.Product, Device: a.Device, Rule: a.Rule, Since: a.OpenedAt})
	}
	c.actions.apply(ctx, c.engine.Restore(eps))
	return nil
}

// Serve runs the cloud until ctx ends, then shuts down gracefully.
func (c *Cloud) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	ictx, stop := context.WithCancel(context.Background())
	wg.Go(func() {
		if err := c.ingest.Run(ictx); err != nil {
			select {
			case errc <- fmt.Errorf("ingest: %w", err):
			default:
			}
		}
	})
	wg.Go(func() { c.ingest.RunPruner(ictx, time.Hour) })
	wg.Go(func() { c.every(ictx, 5*time.Second, func(ctx context.Context) error { return c.diag.Expire(ctx) }) })
	wg.Go(func() {
		if err := c.outbox.Run(ictx); err != nil && ictx.Err() == nil {
			c.log.Error("outbox worker stopped", "error", err)
		}
	})
	wg.Go(func() { c.every(ictx, 10*time.Minute, c.prunePeople) })
	wg.Go(func() {
		c.every(ictx, 30*time.Second, func(ctx context.Context) error {
			c.actions.apply(ctx, c.engine.Tick(c.cfg.Now()))
			return nil
		})
	})
	wg.Go(func() {
		if err := c.http.ServeTLS(c.ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case errc <- fmt.Errorf("api: %w", err):
			default:
			}
		}
	})
	c.log.Info("cloud serving", "url", c.URL, "mqtt_addr", c.MQTTAddr, "tenant", c.Tenant, "rules", len(c.cfg.Rules))
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
	defer cancel()
	_ = c.http.Shutdown(sctx)
	stop()
	wg.Wait()
	c.close()
	return err
}

// prunePeople removes expired sessions of owners and staff and old outbox rows.
func (c *Cloud) prunePeople(ctx context.Context) error {
	_, err1 := c.owners.PruneSessions(ctx)
	err2 := c.support.Sweep(ctx)
	_, err3 := c.store.PruneOutbox(ctx, c.cfg.Now().Add(-OutboxRetention), 1000)
	return errors.Join(err1, err2, err3)
}

func (c *Cloud) every(ctx context.Context, d time.Duration, fn func(context.Context) error) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("background job failed", "error", err)
			}
		}
	}
}

func (c *Cloud) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := c.store.Ping(ctx); err != nil || c.nc.Status() != nats.CONNECTED {
		w.Header().Set("Retry-After", "5")
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// close stops what Open started, in reverse order.
func (c *Cloud) close() {
	if c.ln != nil {
		_ = c.ln.Close()
	}
	if c.nc != nil {
		c.nc.Close()
	}
	if c.broker != nil {
		_ = c.broker.Close()
	}
	if c.store != nil {
		_ = c.store.Close()
	}
}

func httpClient(caPEM []byte) *http.Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		cfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
