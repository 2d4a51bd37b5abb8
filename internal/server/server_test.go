package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestServer_HealthReadyMetrics(t *testing.T) {
	t.Parallel()
	srv := testenv.StartServer(t)
	hc := srv.HTTPClient(t)
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "moat_api_requests_total"} {
		if path == "/metrics" {
			// Make one API request so the counter has a sample.
			req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/api/v1/me", nil)
			if res, err := hc.Do(req); err == nil {
				res.Body.Close()
			}
		}
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+path, nil)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %.200q, want 200 containing %q", path, res.StatusCode, body, want)
		}
	}
}

// TestServer_BootstrapTokenOnce checks that the platform-operator token is made on the first
// start only, and that state survives a restart on the same data directory.
func TestServer_BootstrapTokenOnce(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	var onlineKey client.OnlineKey
	first := startStop(t, cfg, func(s *server.Server) {
		c := newClient(t, s, s.BootstrapToken)
		if _, err := c.CreateTenant(t.Context(), client.TenantCreate{Name: "Contoso"}); err != nil {
			t.Fatalf("CreateTenant: %v", err)
		}
		var err error
		if onlineKey, err = c.GetOnlineKey(t.Context()); err != nil {
			t.Fatalf("GetOnlineKey: %v", err)
		}
	})
	if st, err := os.Stat(filepath.Join(cfg.DataDir, "keys", "online.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("online key file: %v, %v; want mode 0600", st, err)
	}
	if first.BootstrapToken == "" {
		t.Fatal("first start made no bootstrap token")
	}
	startStop(t, cfg, func(s *server.Server) {
		if s.BootstrapToken != "" {
			t.Error("second start on the same data directory made another bootstrap token")
		}
		if !bytes.Equal(s.CAPEM, first.CAPEM) {
			t.Error("second start made a new TLS CA; clients that pinned the first would break")
		}
		c := newClient(t, s, first.BootstrapToken)
		if k, err := c.GetOnlineKey(t.Context()); err != nil || k != onlineKey {
			t.Errorf("online key after restart = %+v, %v; want the first start's (a new key would orphan every published view)", k, err)
		}
		ts, err := c.ListTenants(t.Context(), client.ListOptions{})
		if err != nil || len(ts.Items) != 1 || ts.Items[0].Name != "Contoso" {
			t.Errorf("after restart: tenants %+v, %v; want Contoso", ts.Items, err)
		}
	})
}

func startStop(t *testing.T, cfg server.Config, fn func(*server.Server)) *server.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, err := server.Open(ctx, cfg, quietLog())
	if err != nil {
		t.Fatalf("server.Open: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	fn(s)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return s
}

func newClient(t *testing.T, s *server.Server, token string) *client.Client {
	t.Helper()
	c, err := client.New(s.URL, client.WithToken(token), client.WithCACertPEM(s.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServer_GracefulShutdownLosesNoWrites cancels the server while writes are in flight:
// every write the server acknowledged is in the database afterwards, and no acknowledged
// request was cut off.
func TestServer_GracefulShutdownLosesNoWrites(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, err := server.Open(ctx, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	op := newClient(t, s, s.BootstrapToken)
	ten, err := op.CreateTenant(t.Context(), client.TenantCreate{Name: "Contoso"})
	if err != nil {
		t.Fatal(err)
	}

	var acked atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, err := op.CreateProduct(context.Background(), ten.ID, client.ProductCreate{Name: fmt.Sprintf("P-%d-%d", w, i)})
				if err != nil {
					return // the server is going away: refused or closed, never acknowledged
				}
				if acked.Add(1) >= 20 {
					once.Do(cancel) // shut down while the other writers are mid-request
				}
			}
		})
	}
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	st, err := sqlite.Open(t.Context(), filepath.Join(cfg.DataDir, "moat.db"), nowUTC)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var stored int
	err = st.InReadTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(ten.ID))
		if err != nil {
			return err
		}
		ps, err := tt.Products().List(t.Context(), store.Page{Limit: 1000})
		stored = len(ps)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if int64(stored) < acked.Load() {
		t.Errorf("after shutdown: %d products stored, but the server acknowledged %d", stored, acked.Load())
	}
	if acked.Load() < 20 {
		t.Errorf("only %d writes acknowledged before shutdown; the test did not exercise shutdown under load", acked.Load())
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	c := server.Config{Addr: "nohostport", DeviceAddr: "nohostport", DataDir: "", Database: "mysql://x", TLSCert: "a.pem", LogLevel: "loud", LogFormat: "xml"}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate of a bad config = nil")
	}
	for _, field := range []string{"addr", "device-addr", "data", "database", "tls-cert", "log-level", "log-format", "certificate-lifetime", "shutdown-timeout"} {
		if !strings.Contains(err.Error(), field+":") {
			t.Errorf("Validate error does not name %s: %v", field, err)
		}
	}
	if err := server.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

func TestConfig_RedactsPassword(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{"postgres://moat:s3cret@db:5432/moat", "host=db user=moat password=s3cret dbname=moat"} {
		c := server.DefaultConfig()
		c.Database = dsn
		if got := c.Redacted().Database; strings.Contains(got, "s3cret") {
			t.Errorf("Redacted(%q).Database = %q, still holds the password", dsn, got)
		}
	}
}

func TestServer_OpenFailsCleanly(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.TLSCert, cfg.TLSKey = filepath.Join(cfg.DataDir, "missing.pem"), filepath.Join(cfg.DataDir, "missing-key.pem")
	if _, err := server.Open(t.Context(), cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "tls-cert") {
		t.Errorf("Open with a missing --tls-cert = %v, want an error naming tls-cert", err)
	}
	cfg = server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Database = "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
	if _, err := server.Open(t.Context(), cfg, quietLog()); err == nil {
		t.Error("Open with an unreachable PostgreSQL = nil, want an error")
	} else if errors.Is(err, context.Canceled) {
		t.Errorf("Open: %v", err)
	}
}

func nowUTC() time.Time { return time.Now().UTC() }

// TestServer_NoGoroutinesLeftAfterShutdown starts a server, uses it, stops it, and checks
// that every goroutine it started is gone. Not parallel: it counts the process's goroutines.
func TestServer_NoGoroutinesLeftAfterShutdown(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	var hc *http.Client
	startStop(t, cfg, func(s *server.Server) {
		c := newClient(t, s, s.BootstrapToken)
		if _, err := c.CreateTenant(t.Context(), client.TenantCreate{Name: "Contoso"}); err != nil {
			t.Fatal(err)
		}
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(t, s)}}
		req, _ := http.NewRequestWithContext(t.Context(), "GET", s.URL+"/readyz", nil)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	})
	hc.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := runtime.NumGoroutine()
		if after <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines after shutdown, %d before:\n%s", after, before, buf[:n])
		}
		runtime.Gosched()
	}
}

func tlsConfig(t *testing.T, s *server.Server) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		t.Fatal("no CA certificate")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// TestServer_TLSHosts: the local certificate covers the extra names it is asked for, and a
// restart with another name re-issues it under the same CA.
func TestServer_TLSHosts(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.TLSHosts = []string{"moat.contoso.example", "10.1.2.3"}
	leaf := func() *x509.Certificate {
		var c *x509.Certificate
		startStop(t, cfg, func(s *server.Server) {
			b, err := os.ReadFile(filepath.Join(cfg.DataDir, "tls", "server.pem"))
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := pem.Decode(b)
			if c, err = x509.ParseCertificate(blk.Bytes); err != nil {
				t.Fatal(err)
			}
		})
		return c
	}
	c := leaf()
	for _, h := range []string{"moat.contoso.example", "10.1.2.3", "localhost", "127.0.0.1"} {
		if err := c.VerifyHostname(h); err != nil {
			t.Errorf("server certificate does not cover %s: %v", h, err)
		}
	}
	cfg.TLSHosts = []string{"other.contoso.example"}
	if err := leaf().VerifyHostname("other.contoso.example"); err != nil {
		t.Errorf("after a restart with another host: %v", err)
	}
	bad := server.DefaultConfig()
	bad.TLSHosts = []string{"has space"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "tls-hosts") {
		t.Errorf("Validate(tls-hosts with a space) = %v, want an error naming tls-hosts", err)
	}
}
