package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv/cloudenv"
)

// TestCloudCommands runs the cloud's query commands against a running moat cloud, logged
// in with a moat token of the tenant: devices, telemetry, summaries, diagnostics (one that
// times out exits non-zero), alerts; and MOAT_CLOUD / MOAT_CLOUD_CA in place of the flags.
func TestCloudCommands(t *testing.T) {
	t.Parallel()
	e := cloudenv.NewCloud(t)
	e.Start(t, e.Config())
	d := e.Device(t)
	at := time.Now().Add(-time.Minute)
	if err := e.Publish(t, d, "devices/"+d.ID+"/telemetry", cloudenv.Reading(at, "c1", "drying", 64.5)); err != nil {
		t.Fatal(err)
	}
	cloudenv.Eventually(t, "stored", func() (bool, error) {
		n, err := cloudenv.TelemetryCount(t.Context(), e.Admin, d.ID)
		return n == 1, err
	})
	u := newUser(t)
	u.login(e.P.Server, e.AdminToken(t))
	caPath := filepath.Join(t.TempDir(), "cloud-ca.pem")
	if err := os.WriteFile(caPath, e.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	at2 := []string{"--cloud", e.URL, "--cloud-ca", caPath}

	if out := u.must(append([]string{"cloud", "devices"}, at2...)...); !strings.Contains(out, d.ID) || !strings.Contains(out, "DW100") {
		t.Errorf("cloud devices:\n%s", out)
	}
	rs := mustJSON[[]client.Reading](u, append([]string{"cloud", "telemetry", d.ID, "--since", "1h"}, at2...)...)
	if len(rs) != 1 || rs[0].Metric != "drying_temp" || rs[0].Value != 64.5 {
		t.Errorf("cloud telemetry -o json = %+v", rs)
	}
	if out := u.must(append([]string{"cloud", "summaries", d.ID, "--per", "cycle"}, at2...)...); !strings.Contains(out, "c1") || !strings.Contains(out, "drying_temp") {
		t.Errorf("cloud summaries:\n%s", out)
	}
	r := u.want(ExitError, append([]string{"cloud", "diagnostics", "run", d.ID, "--command", "heater-self-test", "--timeout", "1s", "--wait"}, at2...)...)
	if !strings.Contains(r.stdout, "timed_out") || !strings.Contains(r.stderr, "timed out") {
		t.Errorf("diagnostics run --wait for an offline device:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	u.vars["MOAT_CLOUD"], u.vars["MOAT_CLOUD_CA"] = e.URL, caPath
	ds := mustJSON[[]client.Diagnostic](u, "cloud", "diagnostics", "list", "--device", d.ID)
	if len(ds) != 1 || ds[0].State != "timed_out" || ds[0].Command != "heater-self-test" {
		t.Errorf("cloud diagnostics list = %+v", ds)
	}
	if as := mustJSON[[]client.Alert](u, "cloud", "alerts", "--state", "open"); len(as) != 0 {
		t.Errorf("cloud alerts = %+v, want none", as)
	}
	u.want(ExitUsage, "cloud", "alerts", "--state", "smouldering")
	delete(u.vars, "MOAT_CLOUD")
	if r := u.want(ExitUsage, "cloud", "devices"); !strings.Contains(r.stderr, "MOAT_CLOUD") {
		t.Errorf("no cloud given: %s", r.stderr)
	}
}

// TestCloudRulesCheck: the example rule file passes; a bad one fails with every problem
// named by file and line.
func TestCloudRulesCheck(t *testing.T) {
	t.Parallel()
	u := newUser(t)
	out := u.must("cloud", "rules", "check", filepath.Join("..", "..", "examples", "dw100", "rules.yaml"))
	if !strings.Contains(out, "DW100") || !strings.Contains(out, "heater-drying-anomaly") {
		t.Errorf("rules check of the example:\n%s", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\nproduct: DW100\nrules:\n  - name: hot\n    kind: threshold\n    when: \"drying_temp >\"\n  - name: cold\n    kind: glacial\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := u.want(ExitUsage, "cloud", "rules", "check", bad)
	if !strings.Contains(r.stderr, "bad.yaml:6:") || !strings.Contains(r.stderr, "bad.yaml:8:") {
		t.Errorf("rules check of a bad file: want problems at lines 6 and 8, got:\n%s", r.stderr)
	}
}

// TestCloud_CheckConfigRedactsSecrets: --check-config prints neither a database password
// nor a token a webhook receiver put in its URL.
func TestCloud_CheckConfigRedactsSecrets(t *testing.T) {
	t.Parallel()
	u := newUser(t)
	secret := filepath.Join(t.TempDir(), "crm.secret")
	out := u.must("cloud", "--device-ca", "ca.pem", "--server", "https://moat.example:8443",
		"--database", "postgres://moat:s3cret@db/moat",
		"--webhooks", "crm=https://hook:p4ss@crm.example/hooks?token=t0ken", "--webhook-secret-files", "crm="+secret, "--check-config")
	for _, leak := range []string{"s3cret", "p4ss", "t0ken"} {
		if strings.Contains(out, leak) {
			t.Errorf("--check-config printed %q:\n%s", leak, out)
		}
	}
	if !strings.Contains(out, "crm=https://REDACTED@crm.example/hooks?REDACTED") {
		t.Errorf("--check-config does not show the redacted webhook:\n%s", out)
	}
}
