// Package server is the composition root of `moat server`, the security service. From a
// Config it binds two HTTPS listeners first (so a busy address fails before any state is
// touched), then opens the store (SQLite or PostgreSQL, migrated), bootstraps the first
// platform operator, loads the online TUF key and the CA key-encryption key, and wires the
// repository, fleet and API packages:
//
//   - the management listener (--addr) carries the management API and its OpenAPI
//     document, the web console (/ui/, internal/console), /healthz, /readyz and /metrics
//     (optionally behind a token); it never asks
//     for a client certificate and sends HSTS on every response;
//   - the device listener (--device-addr) carries the device API and /healthz, /readyz; it
//     asks for client certificates, which internal/fleet verifies per tenant (rule 1).
//
// Both accept TLS 1.2 only with ECDHE and AEAD suites, or TLS 1.3, and bound slow clients
// with read timeouts and a header size limit. Background work (TUF timestamp re-signing,
// expired nonce pruning, and whatever the caller adds with AddJob) runs as jobs that a
// lease in the store gives to exactly one replica per period. With PostgreSQL, replicas
// wake each other's waiting devices by LISTEN/NOTIFY (internal/store/postgres/notify,
// replicas.go), and with --s3-endpoint they share image blobs in an S3 bucket
// (internal/blob/s3blob) instead of DATA/blobs. Serve shuts down gracefully:
// in-flight requests finish and their writes commit before the store closes. Wiring only:
// the behaviour lives in the packages it composes. A Server is used by one caller: Open,
// then AddJob, then Serve (or Close).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/console"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/localtls"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/postgres"
	"github.com/moat-iot/moat/internal/store/postgres/notify"
	"github.com/moat-iot/moat/internal/store/sqlite"
)

// Server is a running security service.
type Server struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	store  store.Store
	repo   *repo.Service
	fleet  *fleet.Service
	mgmt   *http.Server
	device *http.Server
	// resumed serves the device connections whose parked long-poll was answered (devices
	// send their next request on them), as device does; parking holds them meanwhile.
	resumed *http.Server
	parking *httpapi.Parking
	mgmtLn  net.Listener
	devLn   net.Listener
	pprofLn net.Listener // nil without --pprof
	pprof   *http.Server
	ready   atomic.Bool
	holder  string // this replica's name on the leases it takes
	jobs    []Job
	serving atomic.Bool
	// notifier carries wake-ups between replicas (PostgreSQL); nil with SQLite.
	notifier *notify.Notifier

	// URL is the management listener's base URL, e.g. https://127.0.0.1:8443: the
	// management API, its OpenAPI document, health and metrics.
	URL string
	// DeviceURL is the device listener's base URL, e.g. https://127.0.0.1:8444: the device
	// API (attestation, then mutual TLS with device certificates). Agents' --server.
	DeviceURL string
	// PprofURL is the profiles' base URL with --pprof (http://127.0.0.1:PORT/debug/pprof/),
	// else "".
	PprofURL string
	// CAPEM is the certificate clients pin to trust the server (the local CA, or the chain
	// given with --tls-cert); both listeners serve the same certificate.
	CAPEM []byte
	// BootstrapToken is the first platform operator's token when this start created it,
	// else "". It exists nowhere else: print it once.
	BootstrapToken string
}

// Open binds both listeners, then builds the server; Serve runs it, or Close releases it.
// A busy address fails Open with a *ListenError before the data directory or the database
// is touched (defect 1; attacked by TestServer_BusyAddrLeavesDataUntouched).
func Open(ctx context.Context, cfg Config, log *slog.Logger) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	s := &Server{cfg: cfg, log: log, now: now, holder: holderName()}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	if s.mgmtLn, err = listen(ctx, "addr", cfg.Addr); err != nil {
		return nil, err
	}
	if s.devLn, err = listen(ctx, "device-addr", cfg.DeviceAddr); err != nil {
		return nil, err
	}
	s.URL, s.DeviceURL = baseURL(s.mgmtLn), baseURL(s.devLn)
	if err = s.openPprof(ctx); err != nil {
		return nil, err
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	cert, caPEM, err := s.certificate(now())
	if err != nil {
		return nil, err
	}
	s.CAPEM = caPEM
	metricsToken, err := httpapi.ReadTokenFile("metrics-token-file", cfg.MetricsTokenFile)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg, now)
	if err != nil {
		return nil, err
	}
	s.store = st
	if s.BootstrapToken, err = bootstrap(ctx, s.store, now().UTC()); err != nil {
		return nil, fmt.Errorf("bootstrap platform operator: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	onlinePriv, err := onlineKey(cfg)
	if err != nil {
		return nil, err
	}
	blobs, err := openBlobs(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if s.repo, err = repo.New(s.store, blobs, onlinePriv, now); err != nil {
		return nil, err
	}
	s.repo.SetDefaultStorageQuota(cfg.DefaultStorageQuotaBytes)
	kek, err := caKEK(cfg)
	if err != nil {
		return nil, err
	}
	if s.notifier, err = newNotifier(cfg, s, reg); err != nil {
		return nil, err
	}
	s.fleet, err = fleet.New(fleet.Config{Store: s.store, Repo: s.repo, Logger: log.With("component", "fleet"), Now: now,
		KEK: kek, Director: onlinePriv, Registerer: reg, CertLifetime: cfg.CertLifetime,
		NoncesPerMinute: cfg.AttestationNoncesPerMinute, Broadcast: broadcast(s.notifier), BroadcastDevice: broadcastDevice(s.notifier)})
	if err != nil {
		return nil, err
	}
	if err := handleWakes(s.notifier, s.fleet); err != nil {
		return nil, err
	}
	s.parking = httpapi.NewParking(idleTimeout)
	api, err := mgmt.New(mgmt.Config{Store: s.store, Parking: s.parking, Logger: log.With("component", "mgmt"), Now: now, Metrics: mgmt.NewMetrics(reg), Repo: s.repo, Fleet: s.fleet,
		MaxUnauthenticatedRequests: cfg.MaxUnauthenticatedRequests, AuthCacheTTL: cfg.AuthCacheTTL, PublishAuthChange: publishAuthChange(s.notifier)})
	if err != nil {
		return nil, err
	}
	if err := handleAuthChanges(s.notifier, api); err != nil {
		return nil, err
	}

	// Each audience on its own listener (DESIGN, Listeners): a route of the other
	// audience is a 404 problem document here (TestServer_ListenersServeOneAudience).
	mgmtMux, devMux := http.NewServeMux(), http.NewServeMux()
	api.Register(mgmtMux, mgmt.Management)
	api.Register(devMux, mgmt.Devices)
	// The web console (/ui/) rides the management listener and calls the API in-process.
	cons, err := console.New(console.Config{API: api, Store: s.store, Logger: log.With("component", "console"), Now: now})
	if err != nil {
		return nil, err
	}
	cons.Register(mgmtMux)
	for _, mux := range []*http.ServeMux{mgmtMux, devMux} {
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintln(w, "ok")
		})
		mux.HandleFunc("GET /readyz", s.readyz)
	}
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	if metricsToken != "" {
		metrics = httpapi.RequireToken(metricsToken, metrics)
	}
	mgmtMux.Handle("GET /metrics", metrics)

	mgmtTLS, devTLS := listenerTLS(cert)
	s.mgmt = newHTTPServer(ctx, withHSTS(http.NewCrossOriginProtection().Handler(mgmtMux)), log, nil)
	s.device = newHTTPServer(ctx, devMux, log, func(ctx context.Context, _ net.Conn) context.Context {
		return fleet.WithConnStart(ctx, now())
	})
	s.resumed = newHTTPServer(ctx, devMux, log, s.parking.ConnContext)
	s.mgmtLn, s.devLn = tls.NewListener(s.mgmtLn, mgmtTLS), tls.NewListener(s.devLn, devTLS)
	s.jobs = append(s.builtinJobs(), Job{Name: "console-sessions", Interval: console.PruneInterval, Run: cons.Prune})
	return s, nil
}

// release closes what Open took, for a server that does not Serve.
func (s *Server) release() {
	for _, ln := range []net.Listener{s.mgmtLn, s.devLn, s.pprofLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if s.store != nil {
		s.store.Close()
	}
}

// Close releases the listeners and the store of a server that was opened but will not
// Serve (a caller that gave up after Open). After Serve it does nothing: Serve releases
// everything itself.
func (s *Server) Close() error {
	if s.serving.Swap(true) {
		return nil
	}
	s.release()
	return nil
}

func openStore(ctx context.Context, cfg Config, now func() time.Time) (store.Store, error) {
	if strings.HasPrefix(cfg.Database, "postgres://") || strings.HasPrefix(cfg.Database, "postgresql://") {
		return postgres.Open(ctx, cfg.Database, now)
	}
	path := cfg.Database
	if path == "" {
		path = filepath.Join(cfg.DataDir, "moat.db")
	}
	path = strings.TrimPrefix(path, "sqlite://")
	return sqlite.Open(ctx, path, now)
}

// certificate is what both listeners serve: the operator's --tls-cert, or one from the
// local CA covering localhost, the listen hosts and --tls-hosts.
func (s *Server) certificate(now time.Time) (tls.Certificate, []byte, error) {
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return cert, nil, fmt.Errorf("load --tls-cert/--tls-key: %w", err)
		}
		chain, err := os.ReadFile(s.cfg.TLSCert)
		if err != nil {
			return cert, nil, err
		}
		return cert, chain, nil
	}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, s.cfg.TLSHosts...)
	for _, ln := range []net.Listener{s.mgmtLn, s.devLn} {
		host, _, _ := net.SplitHostPort(ln.Addr().String())
		if ip := net.ParseIP(host); (ip == nil || !ip.IsUnspecified()) && !slices.Contains(hosts, host) {
			hosts = append(hosts, host)
		}
	}
	cert, caPEM, err := localtls.Load(filepath.Join(s.cfg.DataDir, "tls"), "moat server", hosts, now)
	if err != nil {
		return cert, nil, fmt.Errorf("create TLS certificate: %w", err)
	}
	return cert, caPEM, nil
}

// bootstrap creates the first platform operator and returns its token's secret, once: when
// an operator already exists it returns "".
func bootstrap(ctx context.Context, st store.Store, now time.Time) (string, error) {
	var secret string
	err := st.InTx(ctx, func(tx store.Tx) error {
		n, err := tx.Users().CountOperators(ctx)
		if err != nil || n > 0 {
			return err
		}
		u := auth.User{ID: auth.UserID(ident.New("usr", now)), Name: "platform-operator", PlatformOperator: true, CreatedAt: now}
		if err := tx.Users().Create(ctx, u); err != nil {
			return err
		}
		tok, s := auth.NewToken(u.ID, "bootstrap", now, 0)
		if err := tx.Tokens().Create(ctx, tok); err != nil {
			return err
		}
		secret = s
		return nil
	})
	return secret, err
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if !s.ready.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "shutting down")
		return
	}
	if err := s.store.Ping(ctx); err != nil {
		s.log.WarnContext(ctx, "readiness check failed", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "database unavailable")
		return
	}
	fmt.Fprintln(w, "ready")
}

// Serve answers requests on both listeners and runs the background jobs until ctx is
// done, then shuts down gracefully: it stops accepting, stops the jobs, lets in-flight
// requests finish (their transactions commit) for up to ShutdownTimeout, and closes the
// store. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context) error {
	if s.serving.Swap(true) {
		return errors.New("serve: the server was closed or is already serving")
	}
	s.ready.Store(true)
	errc := make(chan error, 4)
	go func() { errc <- s.mgmt.Serve(s.mgmtLn) }()
	go func() { errc <- s.device.Serve(s.devLn) }()
	go func() { errc <- s.resumed.Serve(s.parking.Listener()) }()
	servers := []*http.Server{s.mgmt, s.device, s.resumed}
	if s.pprof != nil {
		servers = append(servers, s.pprof)
		go func() { errc <- s.pprof.Serve(s.pprofLn) }()
	}
	jobsCtx, stopJobs := context.WithCancel(ctx)
	jobsDone := s.runJobs(jobsCtx)
	notifierDone := runNotifier(jobsCtx, s.notifier, s.log)
	s.log.InfoContext(ctx, "moat server listening", "url", s.URL, "device_url", s.DeviceURL,
		"data_dir", s.cfg.DataDir, "database", s.cfg.databaseKind(), "blobs", s.cfg.blobKind(),
		"metrics_token", s.cfg.MetricsTokenFile != "", "pprof", s.PprofURL)
	if s.cfg.databaseKind() == "postgres" && s.cfg.S3Endpoint == "" {
		s.log.WarnContext(ctx, "blobs are kept in the data directory: another replica sharing the database cannot serve them; set --s3-endpoint")
	}

	var serveErr error
	pending := len(servers)
	select {
	case err := <-errc:
		pending--
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.ready.Store(false)
	s.fleet.Stop() // devices waiting for updates get their answer now
	stopJobs()
	<-jobsDone
	<-notifierDone
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.parking.Drain(sctx); err != nil { // the parked ones among them
		serveErr = errors.Join(serveErr, fmt.Errorf("shutdown: %w", err))
	}
	for _, hs := range servers {
		if err := hs.Shutdown(sctx); err != nil {
			serveErr = errors.Join(serveErr, fmt.Errorf("shutdown: %w", err))
		}
	}
	for range pending {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && serveErr == nil {
			serveErr = fmt.Errorf("serve: %w", err)
		}
	}
	if err := s.store.Close(); err != nil {
		serveErr = errors.Join(serveErr, fmt.Errorf("close store: %w", err))
	}
	s.log.InfoContext(ctx, "moat server stopped")
	return serveErr
}

// Fleet is the server's device service, for in-process tests and benchmarks.
func (s *Server) Fleet() *fleet.Service { return s.fleet }

// Store is the server's store, for in-process tests and the demo.
func (s *Server) Store() store.Store { return s.store }
