package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/moat-iot/moat/internal/server"
)

// Server is an in-process `moat server` on 127.0.0.1 with a fresh data directory. Its
// management API is at URL and its device API at DeviceURL (two listeners, as in
// production); HTTPClient trusts both.
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

// HTTPClient returns a client that trusts only the server's CA (on either listener).
func (s *Server) HTTPClient(t testing.TB) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		t.Fatal("server CA PEM holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
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
