package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/localtls"
	"github.com/moat-iot/moat/internal/sim"
	"github.com/moat-iot/moat/internal/testenv"
)

func TestSim_Help(t *testing.T) {
	t.Parallel()
	r := newUser(t).want(0, "sim", "--help")
	for _, want := range []string{"USAGE", "--server URL", "--device-server URL", "--operator-token TOKEN", "--ramp N/S", "--crash-version VERSION", "--cloud URL", "--cloud-ca FILE", "--telemetry-interval", "--json", "EXAMPLES"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("moat sim --help lacks %q:\n%s", want, r.stderr)
		}
	}
}

// TestSim_RejectsBadFlags: missing and malformed flags are usage errors (exit 2), before
// anything is sent.
func TestSim_RejectsBadFlags(t *testing.T) {
	t.Parallel()
	base := []string{"sim", "--server", "https://127.0.0.1:1", "--device-server", "https://127.0.0.1:2", "--product", "DW100", "--group", "Production",
		"--token", "moat_tok_a.b", "--operator-token", "moat_tok_c.d"}
	for name, args := range map[string][]string{
		"no server":        {"sim", "--product", "DW100", "--group", "Production"},
		"no group":         {"sim", "--server", "https://127.0.0.1:1", "--device-server", "https://127.0.0.1:2", "--product", "DW100"},
		"no token":         {"sim", "--server", "https://127.0.0.1:1", "--device-server", "https://127.0.0.1:2", "--product", "DW100", "--group", "Production", "--operator-token", "x"},
		"bad ramp":         append(base, "--ramp", "fast"),
		"ramp unit":        append(base, "--ramp", "5/h"),
		"no devices":       append(base, "--devices", "0"),
		"crash alone":      append(base, "--crash-version", "2.0.0"),
		"two stdin tokens": {"sim", "--server", "https://127.0.0.1:1", "--device-server", "https://127.0.0.1:2", "--product", "DW100", "--group", "Production", "--token", "-", "--operator-token", "-"},
		"argument":         append(base, "extra"),
		"log level":        append(base, "--log-level", "loud"),
		"cloud without ca": append(base, "--cloud", "mqtts://127.0.0.1:8883"),
		"cloud ca alone":   append(base, "--cloud-ca", "ca.pem"),
		"heater alone":     append(base, "--failing-heater-percent", "5"),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			newUser(t).want(ExitUsage, args...)
		})
	}
}

// TestSim_RunsAndSummarizes: a short run against a real server registers the devices and
// prints the JSON summary; the stats file holds the same shape.
func TestSim_RunsAndSummarizes(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	p.PublishOS("moat-os", "1.0.0", 1, "Retail")
	adm, err := p.Op.CreateMember(t.Context(), p.Tenant, client.MemberCreate{Name: "sim-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, p.Server.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	stats := filepath.Join(dir, "stats.json")
	u := newUser(t)
	u.vars["MOAT_OPERATOR_TOKEN"] = p.Server.OperatorToken
	r := u.runIn(adm.Secret, "sim", "--server", p.Server.URL, "--device-server", p.Server.DeviceURL, "--ca-cert", ca, "--token", "-",
		"--product", "DW100", "--group", "Production", "--devices", "3", "--duration", "3s", "--json", "--stats-file", stats)
	if r.code != 0 {
		t.Fatalf("moat sim = exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	var st sim.Stats
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, r.stdout)
	}
	if st.Devices != 3 || st.GaveUp != 0 {
		t.Errorf("summary = %+v, want 3 devices, none given up", st)
	}
	b, err := os.ReadFile(stats)
	if err != nil || json.Unmarshal(b, &sim.Stats{}) != nil {
		t.Errorf("stats file = %q, %v; want the JSON statistics", b, err)
	}
	if strings.Contains(r.stderr, adm.Secret) || strings.Contains(r.stdout, adm.Secret) {
		t.Error("the token shows in the output")
	}
}

// TestSim_CloudCAFromEnvironment: --cloud-ca defaults to MOAT_CLOUD_CA as it does for the
// 'moat cloud' commands, the flag wins over it, and the variable alone (set for those
// commands) does not make a run without --cloud a usage error.
func TestSim_CloudCAFromEnvironment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, caPEM, err := localtls.Load(dir, "moat cloud", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "cloud-ca.pem")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notPEM, []byte("no certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--server", "https://127.0.0.1:1", "--device-server", "https://127.0.0.1:2", "--product", "DW100", "--group", "Production",
		"--token", "moat_tok_a.b", "--operator-token", "moat_tok_c.d"}
	config := func(variable string, args ...string) (sim.Config, error) {
		var f simFlags
		fs := flag.NewFlagSet("moat sim", flag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(append(append([]string{}, base...), args...)); err != nil {
			t.Fatal(err)
		}
		return f.config(&Env{Stderr: io.Discard, Getenv: func(k string) string {
			if k == "MOAT_CLOUD_CA" {
				return variable
			}
			return ""
		}})
	}
	if cfg, err := config(ca, "--cloud", "mqtts://127.0.0.1:8883"); err != nil || cfg.Cloud == nil {
		t.Errorf("--cloud with MOAT_CLOUD_CA = %v, %v; want the cloud configured", cfg.Cloud, err)
	}
	if cfg, err := config(notPEM, "--cloud", "mqtts://127.0.0.1:8883", "--cloud-ca", ca); err != nil || cfg.Cloud == nil {
		t.Errorf("--cloud-ca over a bad MOAT_CLOUD_CA = %v, %v; want the flag to win", cfg.Cloud, err)
	}
	if _, err := config(notPEM, "--cloud", "mqtts://127.0.0.1:8883"); !errors.As(err, new(usageError)) {
		t.Errorf("--cloud with MOAT_CLOUD_CA holding no certificate = %v, want a usage error", err)
	}
	if cfg, err := config(ca); err != nil || cfg.Cloud != nil {
		t.Errorf("MOAT_CLOUD_CA without --cloud = %v, %v; want no cloud and no error", cfg.Cloud, err)
	}
}
