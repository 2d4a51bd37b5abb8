// Package server is the composition root of `moat server`, the security service: it builds
// the store, the management API, health and metrics endpoints and the HTTPS listener from a
// Config, bootstraps the first platform operator, and shuts down gracefully (in-flight
// requests finish and their writes commit before the store closes). Wiring only: the
// behaviour lives in the packages it composes.
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
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/blob/fsblob"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/postgres"
	"github.com/moat-iot/moat/internal/store/sqlite"
)

// Server is a running security service.
type Server struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	repo     *repo.Service
	fleet    *fleet.Service
	http     *http.Server
	listener net.Listener
	ready    atomic.Bool

	// URL is the base URL clients use, e.g. https://127.0.0.1:8443.
	URL string
	// CAPEM is the certificate clients pin to trust the server (the local CA, or the chain
	// given with --tls-cert).
	CAPEM []byte
	// BootstrapToken is the first platform operator's token when this start created it,
	// else "". It exists nowhere else: print it once.
	BootstrapToken string
}

// Open builds the server and binds its listener; Serve runs it.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	st, err := openStore(ctx, cfg, now)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, store: st}
	ok := false
	defer func() {
		if !ok {
			st.Close()
		}
	}()

	s.BootstrapToken, err = bootstrap(ctx, st, now().UTC())
	if err != nil {
		return nil, fmt.Errorf("bootstrap platform operator: %w", err)
	}

	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	defer func() {
		if !ok {
			ln.Close()
		}
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	tlsCfg, caPEM, err := s.tlsConfig(host, now())
	if err != nil {
		return nil, err
	}
	s.CAPEM = caPEM
	urlHost := host
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		urlHost = "127.0.0.1"
	}
	s.URL = "https://" + net.JoinHostPort(urlHost, port)
	s.listener = tls.NewListener(ln, tlsCfg)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	onlinePriv, err := onlineKey(cfg)
	if err != nil {
		return nil, err
	}
	blobs, err := fsblob.Open(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	rp, err := repo.New(st, blobs, onlinePriv, now)
	if err != nil {
		return nil, err
	}
	s.repo = rp
	kek, err := caKEK(cfg)
	if err != nil {
		return nil, err
	}
	fl, err := fleet.New(fleet.Config{Store: st, Repo: rp, Logger: log.With("component", "fleet"), Now: now,
		KEK: kek, Director: onlinePriv, Registerer: reg, CertLifetime: cfg.CertLifetime})
	if err != nil {
		return nil, err
	}
	s.fleet = fl
	api, err := mgmt.New(mgmt.Config{Store: st, Logger: log.With("component", "mgmt"), Now: now, Metrics: mgmt.NewMetrics(reg), Repo: rp, Fleet: fl})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	// Until the device API has its own listener it shares this one.
	api.Register(mux, mgmt.Management, mgmt.Devices)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))

	s.http = &http.Server{
		Handler:           http.NewCrossOriginProtection().Handler(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext:       func(ctx context.Context, _ net.Conn) context.Context { return fleet.WithConnStart(ctx, now()) },
	}
	ok = true
	return s, nil
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

func (s *Server) tlsConfig(host string, now time.Time) (*tls.Config, []byte, error) {
	// Devices present client certificates (mutual TLS); management clients present none.
	// The device routes verify them (internal/fleet), so the handshake only asks.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("load --tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
		chain, err := os.ReadFile(s.cfg.TLSCert)
		if err != nil {
			return nil, nil, err
		}
		return cfg, chain, nil
	}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, s.cfg.TLSHosts...)
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		if host != "localhost" && host != "127.0.0.1" && host != "::1" {
			hosts = append(hosts, host)
		}
	}
	cert, caPEM, err := localTLS(filepath.Join(s.cfg.DataDir, "tls"), hosts, now)
	if err != nil {
		return nil, nil, fmt.Errorf("create TLS certificate: %w", err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, caPEM, nil
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

// Serve answers requests until ctx is done, then shuts down gracefully: it stops accepting,
// lets in-flight requests finish (their transactions commit) for up to ShutdownTimeout, and
// closes the store. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context) error {
	s.ready.Store(true)
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.listener) }()
	refreshCtx, stopRefresh := context.WithCancel(ctx)
	refreshed := make(chan struct{})
	go func() {
		defer close(refreshed)
		s.refreshLoop(refreshCtx)
	}()
	s.log.InfoContext(ctx, "moat server listening", "url", s.URL, "data_dir", s.cfg.DataDir, "database", s.cfg.databaseKind())

	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.ready.Store(false)
	s.fleet.Stop() // devices waiting for updates get their answer now
	stopRefresh()
	<-refreshed
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		serveErr = errors.Join(serveErr, fmt.Errorf("shutdown: %w", err))
	}
	if serveErr == nil {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
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

// RefreshInterval is how often the server re-signs timestamps nearing expiry.
const RefreshInterval = time.Hour

// refreshLoop keeps every tenant's TUF timestamp fresh (rule 2, freeze): at start, then every
// RefreshInterval, until ctx is done.
func (s *Server) refreshLoop(ctx context.Context) {
	t := time.NewTicker(RefreshInterval)
	defer t.Stop()
	for {
		n, err := s.repo.Refresh(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "refresh TUF timestamps", "err", err)
		} else if n > 0 {
			s.log.InfoContext(ctx, "TUF timestamps re-signed", "views", n)
		}
		err = s.store.InTx(ctx, func(tx store.Tx) error {
			_, err := tx.Nonces().DeleteExpired(ctx, time.Now().Add(-time.Minute))
			return err
		})
		if err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "delete expired attestation nonces", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
