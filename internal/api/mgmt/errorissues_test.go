package mgmt_test

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/errreport"
)

func (w *reportWorld) issuesPath() string { return "/api/v1/tenants/" + w.p.Tenant + "/error-issues" }

// crashes returns n app crashes of dw100-app 1.0.0 whose messages differ only in numbers
// (one issue), made a second apart from start.
func crashes(start time.Time, n int, msg string) []errreport.Report {
	out := make([]errreport.Report, n)
	for i := range out {
		at := start.Add(time.Duration(i) * time.Second)
		code := 2
		out[i] = errreport.Report{ID: errreport.NewID(at), Kind: errreport.AppCrash, At: at, ImagePath: "apps/dw100-app/1.0.0",
			ImageVersion: "1.0.0", ExitCode: &code, Message: fmt.Sprintf(msg, 90+i)}
	}
	return out
}

// TestErrorIssues_GroupListShowAndIsolate is the whole path: two devices upload crashes,
// the tenant's staff see them grouped into issues (through the client, as the CLI does),
// the issue with its versions and reports per day, and its reports page by page; another
// tenant finds none of it (rule 3).
func TestErrorIssues_GroupListShowAndIsolate(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		ctx := t.Context()
		upload(t, w.device, crashes(reportTime, 3, "heater at %d C"))
		upload(t, w.device2, crashes(reportTime.Add(time.Minute), 2, "heater at %d C"))
		upload(t, w.device2, crashes(reportTime.Add(2*time.Minute), 1, "pump stuck after %d s"))

		page, err := w.p.Admin.ListErrorIssues(ctx, w.p.Tenant, client.ErrorIssueOptions{Sort: "reports"})
		if err != nil || len(page.Items) != 2 {
			t.Fatalf("ListErrorIssues = %+v, %v; want 2 issues", page, err)
		}
		heater := page.Items[0]
		if heater.Reports != 5 || heater.Devices != 2 || heater.ImageName != "apps/dw100-app" || heater.Kind != "app_crash" ||
			!strings.Contains(heater.Signature, "message=heater at <n> C") {
			t.Errorf("first issue by reports = %+v, want the heater crash: 5 reports from 2 devices", heater)
		}
		d, err := w.p.Admin.GetErrorIssue(ctx, w.p.Tenant, heater.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Versions) != 1 || d.Versions[0] != (client.ErrorIssueVersion{Version: "1.0.0", Reports: 5}) || len(d.Days) != 30 ||
			d.Days[29].Reports != 5 || d.Days[29].Day != time.Now().UTC().Format("2006-01-02") || d.Issue.ID != heater.ID {
			t.Errorf("GetErrorIssue = %+v, want version 1.0.0 with 5 reports and 30 days ending today with 5", d)
		}
		var ids []string
		opts := client.ListOptions{Limit: 2}
		for range 10 {
			p, err := w.p.Admin.ListErrorIssueReports(ctx, w.p.Tenant, heater.ID, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Items {
				ids = append(ids, r.Report.ID)
			}
			if opts.PageToken = p.NextPageToken; opts.PageToken == "" {
				break
			}
		}
		if len(ids) != 5 {
			t.Errorf("ListErrorIssueReports in pages of 2 = %d reports, want 5", len(ids))
		}
		// Filters: the product's apps, the kind, the time.
		for _, c := range []struct {
			opts client.ErrorIssueOptions
			want int
		}{
			{client.ErrorIssueOptions{Product: "DW100"}, 2},
			{client.ErrorIssueOptions{Product: "dw100", Kind: "app_crash"}, 2},
			{client.ErrorIssueOptions{Kind: "agent"}, 0},
			{client.ErrorIssueOptions{Since: time.Now().Add(time.Hour)}, 0},
			{client.ErrorIssueOptions{Since: time.Now().Add(-time.Hour), ListOptions: client.ListOptions{Limit: 1}}, 1},
		} {
			p, err := w.p.Admin.ListErrorIssues(ctx, w.p.Tenant, c.opts)
			if err != nil || len(p.Items) != c.want {
				t.Errorf("ListErrorIssues(%+v) = %d issues, %v; want %d", c.opts, len(p.Items), err, c.want)
			}
		}
		w.reader.must(200, "GET", w.issuesPath()+"/"+heater.ID, nil)

		// Fabrikam, through Contoso's tenant or its own, finds no such issue.
		for _, path := range []string{
			w.issuesPath(), w.issuesPath() + "/" + heater.ID, w.issuesPath() + "/" + heater.ID + "/reports",
		} {
			w.fabrikam.must(404, "GET", path, nil)
		}
		fab := "/api/v1/tenants/" + w.fabTenant + "/error-issues"
		var empty struct{ Items []any }
		w.fabrikam.must(200, "GET", fab, nil).decode(t, &empty)
		if len(empty.Items) != 0 {
			t.Errorf("Fabrikam's issues = %v, want none", empty.Items)
		}
		for _, path := range []string{fab + "/" + heater.ID, fab + "/" + heater.ID + "/reports"} {
			if p := w.fabrikam.must(404, "GET", path, nil).problem(t); p.Code != "error_issue_not_found" {
				t.Errorf("Fabrikam GET %s: code %q, want error_issue_not_found", path, p.Code)
			}
		}
	})
}

// TestErrorIssues_RejectsBadInput: malformed filters, page tokens and issue IDs are
// problems naming the field (400) or not found (404), never a server error.
func TestErrorIssues_RejectsBadInput(t *testing.T) {
	t.Parallel()
	w := newReportWorld(t)
	upload(t, w.device, crashes(reportTime, 2, "heater at %d C"))
	tok := func(s string) string { return url.QueryEscape(base64.RawURLEncoding.EncodeToString([]byte(s))) }
	for _, c := range []struct {
		query, field string
	}{
		{"kind=crash", "kind"},
		{"since=yesterday", "since"},
		{"since=10000-01-01T00:00:00Z", "since"},
		{"sort=devices", "sort"},
		{"product=" + strings.Repeat("x", 65), "product"},
		{"page_token=" + tok("123"), "page_token"},
		{"page_token=" + tok("x/iss_00000000000000000000"), "page_token"},
		{"limit=0", "limit"},
	} {
		if p := w.admin.must(400, "GET", w.issuesPath()+"?"+c.query, nil).problem(t); p.Field != c.field {
			t.Errorf("GET error-issues?%s: field %q, want %q", c.query, p.Field, c.field)
		}
	}
	if p := w.admin.must(404, "GET", w.issuesPath()+"?product=NoSuchProduct", nil).problem(t); p.Code != "product_not_found" {
		t.Errorf("unknown product: code %q, want product_not_found", p.Code)
	}
	for _, id := range []string{"iss_00000000000000000000", "iss_0", "ISS_00000000000000000000", "x" + strings.Repeat("0", 300)} {
		w.admin.must(404, "GET", w.issuesPath()+"/"+id, nil)
		w.admin.must(404, "GET", w.issuesPath()+"/"+id+"/reports", nil)
	}
	var page struct{ Items []errreport.Issue }
	w.admin.must(200, "GET", w.issuesPath(), nil).decode(t, &page)
	if len(page.Items) != 1 {
		t.Fatalf("issues = %d, want 1", len(page.Items))
	}
	reports := w.issuesPath() + "/" + page.Items[0].ID + "/reports?page_token="
	for _, bad := range []string{"no-slash", "abc/" + errreport.NewID(reportTime), strings.Repeat("0", 64) + "/not-an-id"} {
		if p := w.admin.must(400, "GET", reports+tok(bad), nil).problem(t); p.Field != "page_token" {
			t.Errorf("reports page_token %q: field %q, want page_token", bad, p.Field)
		}
	}
}
