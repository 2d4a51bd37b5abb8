package server_test

import (
	"crypto/tls"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

// occupy listens on a free loopback port for the test's lifetime and returns its address.
func occupy(t *testing.T) string {
	t.Helper()
	ln, err := new(net.ListenConfig).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestServer_BusyAddrLeavesDataUntouched is defect 1: Open on a busy address must fail
// before it creates the database or the platform operator, so that a retry on another
// port (the demo) still bootstraps on the same, fresh data directory.
func TestServer_BusyAddrLeavesDataUntouched(t *testing.T) {
	t.Parallel()
	for _, flag := range []string{"addr", "device-addr"} {
		t.Run(flag, func(t *testing.T) {
			t.Parallel()
			cfg := server.DefaultConfig()
			cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
			cfg.DataDir = t.TempDir()
			busy := occupy(t)
			if flag == "addr" {
				cfg.Addr = busy
			} else {
				cfg.DeviceAddr = busy
			}
			_, err := server.Open(t.Context(), cfg, quietLog())
			le, ok := errors.AsType[*server.ListenError](err)
			if !ok || le.Flag != flag || le.Addr != busy || !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("Open on busy --%s = %v, want a ListenError naming %s and EADDRINUSE", flag, err, busy)
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, "moat.db")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Open on a busy address created the database (%v); a retry would find an operator", err)
			}
			cfg.Addr, cfg.DeviceAddr = "127.0.0.1:0", "127.0.0.1:0"
			startStop(t, cfg, func(s *server.Server) {
				if s.BootstrapToken == "" {
					t.Error("retry on a free port after a busy one made no bootstrap token")
				}
			})
		})
	}
}

// TestServer_TLS12RefusesCBCSuites is defect 9: a TLS 1.2 client that offers only CBC
// suites (SHA-1 and SHA-256 MACs) finds no common suite on either listener, while one
// offering an ECDHE AEAD suite connects.
func TestServer_TLS12RefusesCBCSuites(t *testing.T) {
	t.Parallel()
	srv := testenv.StartServer(t)
	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA,
	}
	for name, u := range map[string]string{"management": srv.URL, "device": srv.DeviceURL} {
		host := strings.TrimPrefix(u, "https://")
		cfg := tlsConfig(t, srv.Server)
		cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, cbc
		if c, err := (&tls.Dialer{Config: cfg}).DialContext(t.Context(), "tcp", host); err == nil {
			state := c.(*tls.Conn).ConnectionState()
			c.Close()
			t.Errorf("%s listener: TLS 1.2 handshake with only CBC suites succeeded with %s, want a refusal",
				name, tls.CipherSuiteName(state.CipherSuite))
		}
		cfg.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		c, err := (&tls.Dialer{Config: cfg}).DialContext(t.Context(), "tcp", host)
		if err != nil {
			t.Fatalf("%s listener: TLS 1.2 with ECDHE-ECDSA-AES128-GCM = %v, want a connection", name, err)
		}
		c.Close()
	}
}

// TestServer_ManagementAsksNoClientCertificate: a browser reaching the management listener
// is never asked for a certificate (no CertificateRequest in the handshake, in TLS 1.2
// and 1.3); the device listener asks.
func TestServer_ManagementAsksNoClientCertificate(t *testing.T) {
	t.Parallel()
	srv := testenv.StartServer(t)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for name, u := range map[string]string{"management": srv.URL, "device": srv.DeviceURL} {
			asked := false
			cfg := tlsConfig(t, srv.Server)
			cfg.MinVersion, cfg.MaxVersion = version, version
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				asked = true
				return &tls.Certificate{}, nil
			}
			c, err := (&tls.Dialer{Config: cfg}).DialContext(t.Context(), "tcp", strings.TrimPrefix(u, "https://"))
			if err != nil {
				t.Fatalf("%s listener, %s: %v", name, tls.VersionName(version), err)
			}
			c.Close()
			if want := name == "device"; asked != want {
				t.Errorf("%s listener, %s: asked for a client certificate = %v, want %v", name, tls.VersionName(version), asked, want)
			}
		}
	}
}

func get(t *testing.T, hc *http.Client, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, header)
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, body
}

// TestServer_ManagementSendsHSTS: every response of the management listener, errors and
// unauthenticated ones included, carries Strict-Transport-Security.
func TestServer_ManagementSendsHSTS(t *testing.T) {
	t.Parallel()
	srv := testenv.StartServer(t)
	hc := srv.HTTPClient(t)
	for _, path := range []string{"/healthz", "/metrics", "/api/v1/me", "/api/v1/openapi.json", "/api/v1/nowhere", "/nowhere"} {
		res, _ := get(t, hc, srv.URL+path, nil)
		if got := res.Header.Get("Strict-Transport-Security"); !strings.HasPrefix(got, "max-age=") {
			t.Errorf("GET %s (%d): Strict-Transport-Security = %q, want max-age=...", path, res.StatusCode, got)
		}
	}
}

// TestServer_MetricsToken: with metrics-token-file, /metrics answers 401 without the token
// or with a wrong one, and 200 with it.
func TestServer_MetricsToken(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "metrics.token")
	const token = "m3tr1cs-t0ken-for-prometheus"
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testenv.StartServer(t, testenv.WithConfig(func(c *server.Config) { c.MetricsTokenFile = file }))
	hc := srv.HTTPClient(t)
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"NoToken", "", 401},
		{"WrongToken", "Bearer not-the-metrics-token", 401},
		{"TokenWithoutScheme", token, 401},
		{"Token", "Bearer " + token, 200},
	} {
		h := http.Header{}
		if tc.auth != "" {
			h.Set("Authorization", tc.auth)
		}
		res, body := get(t, hc, srv.URL+"/metrics", h)
		if res.StatusCode != tc.want {
			t.Errorf("%s: GET /metrics = %d, want %d", tc.name, res.StatusCode, tc.want)
		}
		if tc.want == 401 && (strings.Contains(string(body), "go_info") || res.Header.Get("Content-Type") != "application/problem+json") {
			t.Errorf("%s: refused /metrics answers %q %.100q, want a problem document without metrics", tc.name, res.Header.Get("Content-Type"), body)
		}
	}
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.MetricsTokenFile = file
	if _, err := server.Open(t.Context(), cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "metrics-token-file") {
		t.Errorf("Open with a world-readable metrics token file = %v, want an error naming metrics-token-file", err)
	}
}

// TestServer_ListenersServeOneAudience: device routes are 404 problem documents on the
// management listener, and management routes (and the OpenAPI document and metrics) on
// the device listener.
func TestServer_ListenersServeOneAudience(t *testing.T) {
	t.Parallel()
	srv := testenv.StartServer(t)
	// A plain client: testenv's would route each path to its listener.
	tr := &http.Transport{TLSClientConfig: tlsConfig(t, srv.Server)}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	cases := []struct{ base, path string }{
		{srv.URL, "/api/v1/device/me"},
		{srv.URL, "/api/v1/device/assignment"},
		{srv.DeviceURL, "/api/v1/me"},
		{srv.DeviceURL, "/api/v1/tenants"},
		{srv.DeviceURL, "/api/v1/openapi.json"},
		{srv.DeviceURL, "/metrics"},
	}
	for _, tc := range cases {
		res, body := get(t, hc, tc.base+tc.path, http.Header{"Authorization": {"Bearer " + srv.OperatorToken}})
		if tc.path == "/metrics" {
			if res.StatusCode != 404 {
				t.Errorf("GET %s%s = %d, want 404", tc.base, tc.path, res.StatusCode)
			}
			continue
		}
		if res.StatusCode != 404 || res.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(body), "route_not_found") {
			t.Errorf("GET %s%s = %d %s %.200q, want 404 route_not_found", tc.base, tc.path, res.StatusCode, res.Header.Get("Content-Type"), body)
		}
	}
	// And each listener serves its own audience.
	if res, _ := get(t, hc, srv.URL+"/api/v1/me", http.Header{"Authorization": {"Bearer " + srv.OperatorToken}}); res.StatusCode != 200 {
		t.Errorf("GET /api/v1/me on the management listener = %d, want 200", res.StatusCode)
	}
	if res, _ := get(t, hc, srv.DeviceURL+"/api/v1/device/me", nil); res.StatusCode != 401 {
		t.Errorf("GET /api/v1/device/me without a certificate on the device listener = %d, want 401", res.StatusCode)
	}
	if res, _ := get(t, hc, srv.DeviceURL+"/healthz", nil); res.StatusCode != 200 {
		t.Errorf("GET /healthz on the device listener = %d, want 200", res.StatusCode)
	}
}
