package cli

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestErrorReport_ListDownloadHealth: support staff list the tenant's reports with
// filters, download them as CSV and JSON into a file that is replaced only with --force,
// and see the app version's health after a crash.
func TestErrorReport_ListDownloadHealth(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := testenv.NewPlatform(t)
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	d := p.NewDevice(true, "DW100/Production")
	cert, err := p.Attest(d, osImg.Measurement(), app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	m := app.Measurement()
	at := time.Now().UTC().Truncate(time.Second)
	exit := 2
	reports := []client.ErrorReport{
		{ID: errreport.NewID(at), Kind: "app_crash", At: at, ImagePath: m.Path, ImageVersion: m.Version,
			ExitCode: &exit, UptimeSeconds: 7, Message: `=HYPERLINK("http://evil.example","x")`},
		{ID: errreport.NewID(at.Add(time.Second)), Kind: "agent", At: at.Add(time.Second), Code: "queue_full", Dropped: 3},
	}
	if _, err := p.DeviceClient(cert).CreateErrorReports(ctx, client.ErrorReportBatch{Reports: reports}); err != nil {
		t.Fatalf("CreateErrorReports = %v", err)
	}
	mem, err := p.Admin.CreateMember(ctx, p.Tenant, client.MemberCreate{Name: "support", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	u := newUser(t)
	u.login(p.Server, mem.Secret)
	u.must("tenant", "select", "Contoso")

	out := u.must("error-report", "list", "--product", "DW100", "--group", "Production", "--since", "1h")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "RECEIVED") ||
		!strings.Contains(out, d.ID[:12]) || !strings.Contains(out, "exit 2 after 7s") {
		t.Errorf("moat error-report list = \n%s\nwant a header and both reports", out)
	}
	recs := mustJSON[[]client.TenantErrorReport](u, "error-report", "list", "--kind", "app_crash")
	if len(recs) != 1 || recs[0].Report.ID != reports[0].ID || recs[0].DeviceID != d.ID || recs[0].ProductID == "" {
		t.Errorf("list --kind app_crash -o json = %+v, want the crash with its device and product", recs)
	}
	if recs := mustJSON[[]client.TenantErrorReport](u, "error-report", "list", "--since", "2000-01-01T00:00:00Z", "--until", "2001-01-01T00:00:00Z"); len(recs) != 0 {
		t.Errorf("list of 2000 = %+v, want none", recs)
	}
	u.want(ExitInvalid, "error-report", "list", "--kind", "crash")
	u.want(ExitUsage, "error-report", "list", "--since", "yesterday")
	u.want(ExitUsage, "error-report", "list", "--group", "Production")
	u.want(ExitNotFound, "error-report", "list", "--product", "DW999")

	// Download: CSV, then refused over an existing file, replaced with --force as JSON.
	dir := t.TempDir()
	file := filepath.Join(dir, "reports.csv")
	u.must("error-report", "download", "--output", file)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows) != 3 || rows[0][0] != "device_id" {
		t.Fatalf("downloaded CSV = %q, %v; want a header and two reports", rows, err)
	}
	if msg := rows[1+slices.IndexFunc(rows[1:], func(r []string) bool { return r[5] == "app_crash" })][slices.Index(rows[0], "message")]; !strings.HasPrefix(msg, "'=") {
		t.Errorf("downloaded CSV message = %q, want the formula neutralised", msg)
	}
	before, _ := os.ReadFile(file)
	r := u.want(ExitError, "error-report", "download", "--format", "json", "--output", file)
	if after, _ := os.ReadFile(file); string(after) != string(before) || !strings.Contains(r.stderr, "--force") {
		t.Errorf("download over an existing file: stderr %q; want it refused, the file unchanged, and --force named", r.stderr)
	}
	u.must("error-report", "download", "--format", "json", "--output", file, "--force", "--kind", "agent")
	var items []client.TenantErrorReport
	if b, err := os.ReadFile(file); err != nil || json.Unmarshal(b, &items) != nil || len(items) != 1 || items[0].Report.Kind != "agent" {
		t.Errorf("downloaded JSON = %+v, %v; want the agent report", items, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("download left %d files in its directory, want only the download", len(ents))
	}
	u.want(ExitUsage, "error-report", "download", "--format", "xlsx", "--output", file)
	u.want(ExitUsage, "error-report", "download")

	// Health: one device runs the app and crashed once.
	out = u.must("error-report", "health", "--product", "DW100", "--window", "24h")
	var appLine string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "app") {
			appLine = strings.Join(strings.Fields(l), " ")
		}
	}
	if !strings.HasPrefix(appLine, "app "+m.Path+" "+m.Version+" 1 1 0.0% 1 ") {
		t.Errorf("moat error-report health = \n%s\nwant the app with 1 device, 1 crashed, 0.0%% crash-free, 1 crash", out)
	}
	h := mustJSON[client.ImageHealth](u, "error-report", "health")
	if h.Window != "168h0m0s" || len(h.Versions) != 2 {
		t.Errorf("health -o json = %+v, want the 168h window and the OS and app versions", h)
	}
	u.want(ExitUsage, "error-report", "health", "--window", "10m")
}
