package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestConfig_PprofIsLoopbackOnly: profiles show request paths, timings and memory, so the
// profiling listener is refused on any address but a loopback one.
func TestConfig_PprofIsLoopbackOnly(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{
		"127.0.0.1:6060": true, "[::1]:6060": true, "localhost:6060": true, "127.0.0.2:0": true,
		"0.0.0.0:6060": false, ":6060": false, "[::]:6060": false, "10.1.2.3:6060": false,
		"example.com:6060": false, "6060": false, "127.0.0.1": false,
	} {
		c := server.DefaultConfig()
		c.Pprof = addr
		err := c.Validate()
		if ok && err != nil {
			t.Errorf("pprof %q refused: %v", addr, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "pprof:")) {
			t.Errorf("pprof %q = %v, want refused naming pprof", addr, err)
		}
	}
}

// TestServer_ServesProfilesOnlyOnTheirListener: with --pprof the profiles answer on their
// own loopback listener, and never on the management or device listeners.
func TestServer_ServesProfilesOnlyOnTheirListener(t *testing.T) {
	t.Parallel()
	srv := testenv.StartServer(t, testenv.WithConfig(func(c *server.Config) { c.Pprof = "127.0.0.1:0" }))
	if !strings.HasPrefix(srv.PprofURL, "http://127.0.0.1:") {
		t.Fatalf("PprofURL = %q", srv.PprofURL)
	}
	res, err := http.Get(srv.PprofURL + "heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "heap profile") {
		t.Errorf("GET heap profile = %d %.100q", res.StatusCode, body)
	}
	hc := srv.HTTPClient(t)
	for _, base := range []string{srv.URL, srv.DeviceURL} {
		res, err := hc.Get(base + "/debug/pprof/heap?debug=1")
		if err != nil {
			continue // the device listener may ask for a client certificate
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s/debug/pprof/heap = %d, want 404", base, res.StatusCode)
		}
	}
}
