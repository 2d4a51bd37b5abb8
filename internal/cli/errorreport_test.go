package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestDevice_ErrorReports: a device uploads reports of every kind; support staff list them
// as a table, newest first, and as the API objects.
func TestDevice_ErrorReports(t *testing.T) {
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
	at := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	exit := 2
	reports := []client.ErrorReport{
		{ID: errreport.NewID(at), Kind: "app_crash", At: at, ImagePath: "apps/dw100-app/1.0.0", ImageVersion: "1.0.0",
			ExitCode: &exit, UptimeSeconds: 7, StderrTail: "starting\npanic: heater stuck on\n"},
		{ID: errreport.NewID(at.Add(time.Second)), Kind: "update_failed", At: at.Add(time.Second), ImagePath: "apps/dw100-app/1.0.0",
			Step: "verify", Target: "apps/dw100-app/2.0.0", Code: "signature_invalid", Message: "the signature does not verify\nby any key"},
		{ID: errreport.NewID(at.Add(2 * time.Second)), Kind: "capability_denied", At: at.Add(2 * time.Second), ImagePath: "apps/dw100-app/1.0.0",
			Capability: "host:evil.example:443"},
		{ID: errreport.NewID(at.Add(3 * time.Second)), Kind: "agent", At: at.Add(3 * time.Second), Code: "queue_full", Dropped: 12},
		{ID: errreport.NewID(at.Add(4 * time.Second)), Kind: "app_crash", At: at.Add(4 * time.Second), ImagePath: "apps/dw100-app/1.0.0",
			Signal: "SIGSEGV", Message: "killed"},
	}
	if _, err := p.DeviceClient(cert).CreateErrorReports(ctx, client.ErrorReportBatch{Reports: reports}); err != nil {
		t.Fatalf("CreateErrorReports = %v", err)
	}
	m, err := p.Admin.CreateMember(ctx, p.Tenant, client.MemberCreate{Name: "support", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	u := newUser(t)
	u.login(p.Server, m.Secret)
	u.must("tenant", "select", "Contoso")

	out := u.must("device", "error-reports", d.ID)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{
		{"TIME", "KIND", "IMAGE", "SUMMARY"},
		{"2025-06-07T08:09:14Z", "app_crash", "apps/dw100-app/1.0.0", "SIGSEGV after 0s: killed"},
		{"2025-06-07T08:09:13Z", "agent", "-", "12 reports dropped: queue_full"},
		{"2025-06-07T08:09:12Z", "capability_denied", "apps/dw100-app/1.0.0", "host:evil.example:443 denied"},
		{"2025-06-07T08:09:11Z", "update_failed", "apps/dw100-app/1.0.0", "verify of apps/dw100-app/2.0.0 failed: signature_invalid: the signature does not verify"},
		{"2025-06-07T08:09:10Z", "app_crash", "apps/dw100-app/1.0.0", "exit 2 after 7s: panic: heater stuck on"},
	}
	var got [][]string
	for _, l := range lines {
		cells := strings.SplitN(strings.Join(strings.Fields(l), " "), " ", 4)
		got = append(got, cells)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("moat device error-reports (-want +got):\n%s\n%s", d, out)
	}

	recs := mustJSON[[]client.ErrorReportRecord](u, "device", "error-reports", d.ID)
	if len(recs) != 5 || recs[4].Report.StderrTail != reports[0].StderrTail || recs[0].DeviceID != d.ID {
		t.Errorf("-o json = %+v, want the five API objects, newest first", recs)
	}

	r := u.run("device", "error-reports", d.ID, "--limit", "2", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stderr, "newest 2") {
		t.Errorf("--limit 2: exit %d, stderr %q; want 0 and a note that there are more", r.code, r.stderr)
	}
	u.want(ExitUsage, "device", "error-reports", d.ID, "--limit", "0")
	u.want(ExitUsage, "device", "error-reports", "not-a-device")
	u.want(ExitNotFound, "device", "error-reports", strings.Repeat("0", 64))
}
