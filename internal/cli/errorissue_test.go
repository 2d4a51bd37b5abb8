package cli

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestErrorReport_IssuesAndShow: a device's crashes that differ only in numbers are one
// issue; support staff list the issues and show one with its versions, days and reports;
// text the device wrote is printed without its control characters.
func TestErrorReport_IssuesAndShow(t *testing.T) {
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
	at := time.Now().UTC().Truncate(time.Second)
	var reports []client.ErrorReport
	for i := range 3 {
		exit := 2
		reports = append(reports, client.ErrorReport{ID: errreport.NewID(at.Add(time.Duration(i) * time.Second)), Kind: "app_crash",
			At: at, ImagePath: "apps/dw100-app/1.0.0", ImageVersion: "1.0.0", ExitCode: &exit, Message: fmt.Sprintf("heater at %d C", 90+i)})
	}
	reports = append(reports, client.ErrorReport{ID: errreport.NewID(at.Add(time.Minute)), Kind: "agent", At: at, Code: "queue_full", Dropped: 3,
		Message: "dropped 3 reports \u001b]8;;evil"}) // refused: a control character
	if _, err := p.DeviceClient(cert).CreateErrorReports(ctx, client.ErrorReportBatch{Reports: reports}); err == nil {
		t.Fatal("CreateErrorReports(a control character) = nil, want refused")
	}
	reports[3].Message = "dropped 3 reports"
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

	out := u.must("error-report", "issues", "--sort", "reports", "--product", "DW100", "--since", "24h")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ISSUE") || !strings.Contains(lines[1], "app_crash") ||
		!strings.Contains(lines[1], "apps/dw100-app") || !strings.Contains(lines[1], "heater at 92 C") {
		t.Fatalf("moat error-report issues --product DW100 =\n%s\nwant one issue: the heater crash", out)
	}
	id := strings.Fields(lines[1])[0]
	all := mustJSON[[]client.ErrorIssue](u, "error-report", "issues")
	if len(all) != 2 {
		t.Errorf("moat error-report issues -o json = %d issues, want 2", len(all))
	}
	out = u.must("error-report", "show", id)
	for _, want := range []string{"Reports:     3", "Devices:     1", "1.0.0 (3)", "message=heater at <n> C", at.Format("2006-01-02") + "  3", "exit 2 after 0s: heater at 9"} {
		if !strings.Contains(out, want) {
			t.Errorf("moat error-report show %s =\n%s\nwant it to contain %q", id, out, want)
		}
	}
	detail := mustJSON[client.ErrorIssueDetail](u, "error-report", "show", id)
	if detail.Issue.ID != id || len(detail.Days) != 30 {
		t.Errorf("show -o json = %+v, want the issue with 30 days", detail)
	}
	u.want(ExitUsage, "error-report", "show", "not-an-issue")
	u.want(ExitUsage, "error-report", "issues", "--since", "yesterday")
	u.want(ExitUsage, "error-report", "issues", "--sort", "devices")
	u.want(ExitUsage, "error-report", "issues", "--limit", "0")
	u.want(ExitInvalid, "error-report", "issues", "--kind", "crash")
	u.want(ExitNotFound, "error-report", "issues", "--product", "NoSuchProduct")
	u.want(ExitNotFound, "error-report", "show", "iss_00000000000000000000")
}

func TestParseSince(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-01-02T03:04:05Z": time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		"24h":                  now.Add(-24 * time.Hour),
		"7d":                   now.AddDate(0, 0, -7),
		"90m":                  now.Add(-90 * time.Minute),
	} {
		if got, err := parseSince("since", in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if got, err := parseSince("since", "", now); err != nil || !got.IsZero() {
		t.Errorf(`parseSince("") = %v, %v; want no time and no error`, got, err)
	}
	for _, in := range []string{"x", "-1h", "-3d", "0d", "2026-01-02"} {
		if _, err := parseSince("since", in, now); err == nil {
			t.Errorf("parseSince(%q) = nil error, want one", in)
		}
	}
}
