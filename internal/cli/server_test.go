package cli

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/server"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServer_ExampleConfigParses checks the annotated example in docs/ against the real
// parser: it must load, and flags must win over it.
func TestServer_ExampleConfigParses(t *testing.T) {
	t.Parallel()
	u := newUser(t)
	out := u.must("server", "--config", "../../docs/server.example.json", "--check-config")
	var cfg map[string]any
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("--check-config printed %q: %v", out, err)
	}
	if cfg["data"] != "/var/lib/moat" || cfg["log-format"] != "json" || cfg["version"] != float64(1) {
		t.Errorf("effective config = %v, want data /var/lib/moat and log-format json from the file", cfg)
	}
	// The printed config is itself a valid config file.
	again := u.must("server", "--config", writeFile(t, "effective.json", out), "--check-config")
	if again != out {
		t.Errorf("--check-config of its own output differs:\n%s\nvs\n%s", again, out)
	}
	out = u.must("server", "--config", "../../docs/server.example.json", "--addr", "127.0.0.1:9999", "--tls-hosts", "moat.contoso.example,10.0.0.5", "--check-config")
	if !strings.Contains(out, `"moat.contoso.example,10.0.0.5"`) {
		t.Errorf("--check-config does not print --tls-hosts back: %s", out)
	}
	if !strings.Contains(out, `"127.0.0.1:9999"`) {
		t.Errorf("flag did not override the config file: %s", out)
	}
}

func TestServer_StrictConfigFile(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"missing version": `{"addr":"127.0.0.1:1"}`,
		"other version":   `{"version":2}`,
		"unknown key":     `{"version":1,"adress":"127.0.0.1:1"}`,
		"trailing data":   `{"version":1} {}`,
		"nested value":    `{"version":1,"addr":{"host":"x"}}`,
		"not JSON":        `addr = 1`,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t)
			r := u.run("server", "--config", writeFile(t, "server.json", content), "--check-config")
			if r.code != ExitUsage || !strings.Contains(r.stderr, "config") {
				t.Errorf("moat server --config (%s) = exit %d, stderr %q; want exit 2 naming the config", name, r.code, r.stderr)
			}
		})
	}
}

func TestServer_CheckConfigRedactsPassword(t *testing.T) {
	t.Parallel()
	u := newUser(t)
	out := u.must("server", "--database", "postgres://moat:s3cret@db/moat", "--check-config")
	if strings.Contains(out, "s3cret") || !strings.Contains(out, "REDACTED") {
		t.Errorf("--check-config printed the database password:\n%s", out)
	}
}

func TestServer_InvalidConfigNamesField(t *testing.T) {
	t.Parallel()
	u := newUser(t)
	r := u.run("server", "--log-level", "loud", "--check-config")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "log-level") {
		t.Errorf("moat server --log-level loud = exit %d, stderr %q; want exit 2 naming log-level", r.code, r.stderr)
	}
}

func TestDemo_ExitAfter(t *testing.T) {
	t.Parallel()
	u := newUser(t)
	out := u.must("demo", "--addr", "127.0.0.1:0", "--device-addr", "127.0.0.1:0", "--exit-after", "2s")
	for _, want := range []string{"tenant Contoso", "product DW100", "Production OS Evaluation", "rolled back to apps/dw100-app/1.1.0", "stopped 2s after the scenario"} {
		if !strings.Contains(out, want) {
			t.Errorf("moat demo output lacks %q:\n%s", want, out)
		}
	}
}

// TestServer_EnvironmentPrecedence: defaults < config file < MOAT_* environment < flags.
// Not parallel: it sets process environment variables.
func TestServer_EnvironmentPrecedence(t *testing.T) {
	t.Setenv("MOAT_LOG_LEVEL", "debug")
	t.Setenv("MOAT_ADDR", "127.0.0.1:9001")
	u := newUser(t)
	file := writeFile(t, "server.json", `{"version":1,"log-level":"error","data":"/srv/moat"}`)
	out := u.must("server", "--config", file, "--addr", "127.0.0.1:9002", "--check-config")
	var cfg map[string]any
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"log-level": "debug", "addr": "127.0.0.1:9002", "data": "/srv/moat"}
	for k, v := range want {
		if cfg[k] != v {
			t.Errorf("effective %s = %v, want %v (file < env < flag)", k, cfg[k], v)
		}
	}
}

// TestServer_ValidateNamesFlags is defect 12: every field Config.Validate names is a key a
// user can type: a flag of moat server, and so a config-file key and a MOAT_* variable.
func TestServer_ValidateNamesFlags(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("moat server", flag.ContinueOnError)
	cfg := server.DefaultConfig()
	serverFlags(fs, &cfg)
	bad := []server.Config{
		{Addr: "nohostport", DeviceAddr: "nohostport", Database: "mysql://x", TLSHosts: []string{"has space"},
			TLSCert: "a.pem", LogLevel: "loud", LogFormat: "xml"},
		{Addr: "127.0.0.1:8443", DeviceAddr: "127.0.0.1:8443", DataDir: "d", LogLevel: "info", LogFormat: "text",
			CertLifetime: time.Hour, ShutdownTimeout: time.Second},
	}
	seen := map[string]bool{}
	for _, c := range bad {
		err := c.Validate()
		if err == nil {
			t.Fatalf("Validate(%+v) = nil, want errors", c)
		}
		for line := range strings.SplitSeq(err.Error(), "\n") {
			field, _, ok := strings.Cut(line, ": ")
			if !ok || fs.Lookup(field) == nil {
				t.Errorf("Validate error %q does not start with a flag name of moat server", line)
			}
			seen[field] = true
		}
	}
	for _, want := range []string{"addr", "device-addr", "data", "database", "tls-hosts", "tls-cert", "log-level", "log-format", "certificate-lifetime", "shutdown-timeout"} {
		if !seen[want] {
			t.Errorf("no Validate error named %s; the test's bad configs should cover every check", want)
		}
	}
}
