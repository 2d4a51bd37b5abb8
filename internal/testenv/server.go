package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/moat-iot/moat/internal/server"
)

// Server is an in-process `moat server` on 127.0.0.1 with a fresh data directory. Its
// management API is at URL and its device API at DeviceURL: two listeners, as in
// production, and each answers 404 for the other's routes.
type Server struct {
	*server.Server
	// OperatorToken is the bootstrap platform-operator token.
	OperatorToken string
	// Logs holds everything the server logged, for tests that scan it for secrets.
	Logs *SyncBuffer
}

// ServerOption changes the test server's config.
type ServerOption func(*server.Config)

// WithDatabase makes the server use the given database (a postgres:// URL).
func WithDatabase(dsn string) ServerOption {
	return func(c *server.Config) { c.Database = dsn }
}

// WithConfig changes the test server's config with fn.
func WithConfig(fn func(*server.Config)) ServerOption { return ServerOption(fn) }

// StartServer starts a server for the test and stops it at cleanup, failing the test if
// shutdown is not clean.
func StartServer(t testing.TB, opts ...ServerOption) *Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	for _, o := range opts {
		o(&cfg)
	}
	logs := &SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.Open(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("server.Open: %v", err)
	}
	if s.BootstrapToken == "" {
		cancel()
		t.Fatal("server.Open on a fresh data directory made no bootstrap token")
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server.Serve: %v", err)
		}
	})
	return &Server{Server: s, OperatorToken: s.BootstrapToken, Logs: logs}
}

// HTTPClient returns a client that trusts only the server's CA. Requests for either of the
// server's listeners go to the listener of their audience: /api/v1/device/... to
// DeviceURL, anything else to URL, as a device holding a recovery grant or a person's
// tool would send them. Tests of the listeners themselves use a plain client.
func (s *Server) HTTPClient(t testing.TB) *http.Client {
	t.Helper()
	return s.httpClient(t, nil)
}

func (s *Server) httpClient(t testing.TB, certs []tls.Certificate) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		t.Fatal("server CA PEM holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: certs}}
	t.Cleanup(tr.CloseIdleConnections)
	mgmt, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	device, err := url.Parse(s.DeviceURL)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: byAudience{mgmt: mgmt.Host, device: device.Host, base: tr}}
}

// byAudience sends a request addressed to either listener of one server to the listener
// that serves its path. Requests for other hosts pass unchanged.
type byAudience struct {
	mgmt, device string
	base         http.RoundTripper
}

func (b byAudience) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != b.mgmt && r.URL.Host != b.device {
		return b.base.RoundTrip(r)
	}
	host := b.mgmt
	if strings.HasPrefix(r.URL.Path, "/api/v1/device/") {
		host = b.device
	}
	if host == r.URL.Host {
		return b.base.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.URL.Host, r.Host = host, ""
	return b.base.RoundTrip(r)
}

// SyncBuffer is a goroutine-safe log sink.
type SyncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

var _ io.Writer = (*SyncBuffer)(nil)

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
