package console

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/errreport"
)

// The error-report insight pages (issue 11): error issues and one issue with its reports
// per day, the tenant-wide report list with its download (download.go), and the health of
// each image version. Like every page they read only through q.api, as the session's user.

// option is one choice of a filter's select.
type option struct{ Value, Label string }

// sinceOptions are the "since" choices of the error pages: how far back, from now.
var sinceOptions = []option{{"", "any time"}, {"24h", "last 24 hours"}, {"7d", "last 7 days"}, {"30d", "last 30 days"}, {"90d", "last 90 days"}}

// sinceDurations are the durations of sinceOptions.
var sinceDurations = map[string]time.Duration{"24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour, "90d": 90 * 24 * time.Hour}

// since is the time a since choice names (zero for any time); an unknown choice is a 400.
func (q *req) since(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	d, ok := sinceDurations[s]
	if !ok {
		return time.Time{}, badRequest("since must be one of 24h, 7d, 30d or 90d.")
	}
	return q.now.Add(-d), nil
}

func badRequest(detail string) error {
	return &client.Error{Status: http.StatusBadRequest, Detail: detail}
}

// kindOptions are the report kinds, for the kind filters.
func kindOptions() []option {
	out := []option{{"", "any kind"}}
	for _, k := range errreport.Kinds {
		out = append(out, option{string(k), string(k)})
	}
	return out
}

// reportRow is a report with its device's console page.
type reportRow struct {
	DeviceID   string
	DeviceHref string
	Group      string
	ReceivedAt time.Time
	Report     client.ErrorReport
}

// withPage returns path?form&page_token=token.
func withPage(path string, form url.Values, token string) string {
	v := url.Values{}
	for k, vs := range form {
		if len(vs) > 0 && vs[0] != "" {
			v.Set(k, vs[0])
		}
	}
	if token != "" {
		v.Set("page_token", token)
	}
	if len(v) == 0 {
		return path
	}
	return path + "?" + v.Encode()
}

// issuesPageSize is the issue list's page.
const issuesPageSize = 50

type issuesView struct {
	Products []client.Product
	Kinds    []option
	Sinces   []option
	Sorts    []option
	Form     url.Values
	Issues   []issueRow
	Next     string
	Reports  string
}

type issueRow struct {
	Issue client.ErrorIssue
	Href  string
}

func (q *req) issueHref(id string) string { return q.base() + "issues/" + url.PathEscape(id) }

// issues lists the tenant's error issues: filters product (name), kind and since, sorted
// by last seen or by reports, paged by the API.
func issues(q *req) error {
	qs := q.r.URL.Query()
	form := url.Values{"product": {qs.Get("product")}, "kind": {qs.Get("kind")}, "since": {qs.Get("since")}, "sort": {qs.Get("sort")}}
	since, err := q.since(form.Get("since"))
	if err != nil {
		return err
	}
	ps, err := q.api.ListProducts(q.ctx, q.tenant.ID, client.ListOptions{Limit: 1000})
	if err != nil {
		return err
	}
	page, err := q.api.ListErrorIssues(q.ctx, q.tenant.ID, client.ErrorIssueOptions{
		ListOptions: client.ListOptions{Limit: issuesPageSize, PageToken: qs.Get("page_token")},
		Product:     form.Get("product"), Kind: form.Get("kind"), Since: since, Sort: form.Get("sort"),
	})
	if err != nil {
		return err
	}
	v := issuesView{Products: ps.Items, Kinds: kindOptions(), Sinces: sinceOptions, Form: form,
		Sorts:   []option{{"last_seen", "last seen"}, {"reports", "most reports"}},
		Reports: q.base() + "error-reports"}
	for _, is := range page.Items {
		v.Issues = append(v.Issues, issueRow{Issue: is, Href: q.issueHref(is.ID)})
	}
	if page.NextPageToken != "" {
		v.Next = withPage(q.base()+"issues", form, page.NextPageToken)
	}
	return q.render(http.StatusOK, "issues.html", "Error issues", v)
}

// issueReportsPageSize is the page of an issue's reports.
const issueReportsPageSize = 20

type issueView struct {
	Detail  client.ErrorIssueDetail
	Chart   Chart
	Reports []reportRow
	Next    string
	List    string
}

// issuePage shows one issue: its signature, figures, versions, a chart of its reports per
// day over 30 days, and its newest reports (paged), each linking to its device.
func issuePage(q *req) error {
	id := q.r.PathValue("issue")
	d, err := q.api.GetErrorIssue(q.ctx, q.tenant.ID, id)
	if err != nil {
		return err
	}
	_, gs, err := q.groups()
	if err != nil {
		return err
	}
	page, err := q.api.ListErrorIssueReports(q.ctx, q.tenant.ID, d.Issue.ID,
		client.ListOptions{Limit: issueReportsPageSize, PageToken: q.r.URL.Query().Get("page_token")})
	if err != nil {
		return err
	}
	v := issueView{Detail: d, List: q.base() + "issues",
		Chart: Chart{Title: "Reports per day, last " + strconv.Itoa(len(d.Days)) + " days"}}
	for _, day := range d.Days {
		label := day.Day
		if len(label) == len("2006-01-02") {
			label = label[5:] // MM-DD, as the device charts
		}
		v.Chart.Points = append(v.Chart.Points, Point{Label: label, Value: float64(day.Reports)})
	}
	devs := map[string]client.Device{}
	for _, r := range page.Items {
		row := reportRow{DeviceID: r.DeviceID, DeviceHref: q.deviceHref(r.DeviceID), ReceivedAt: r.ReceivedAt, Report: r.Report}
		// The device's group, read once per device of the page (at most one page of them).
		dev, ok := devs[r.DeviceID]
		if !ok {
			if dev, err = q.api.GetDevice(q.ctx, q.tenant.ID, r.DeviceID); err != nil {
				return err
			}
			devs[r.DeviceID] = dev
		}
		row.Group = groupName(gs, dev.ProductID, dev.GroupID)
		v.Reports = append(v.Reports, row)
	}
	if page.NextPageToken != "" {
		v.Next = withPage(q.issueHref(d.Issue.ID), nil, page.NextPageToken) + "#reports"
	}
	return q.render(http.StatusOK, "issue.html", "Issue "+d.Issue.ID, v)
}

// reportsPageSize is the tenant-wide report list's page.
const reportsPageSize = 50

type reportsListView struct {
	Products []client.Product
	Groups   []groupRef
	Kinds    []option
	Sinces   []option
	Form     url.Values
	Reports  []reportRow
	Next     string
	CSV      string
	JSON     string
	Issues   string
}

// reportFilter reads the report filters of the query: product and group IDs (a group
// alone implies its product), kind and since. form is what the page's filters and links
// carry.
func (q *req) reportFilter(gs []groupRef) (client.ErrorReportFilter, url.Values, error) {
	qs := q.r.URL.Query()
	form := url.Values{"product": {qs.Get("product")}, "group": {qs.Get("group")}, "kind": {qs.Get("kind")}, "since": {qs.Get("since")}}
	since, err := q.since(form.Get("since"))
	if err != nil {
		return client.ErrorReportFilter{}, nil, err
	}
	f := client.ErrorReportFilter{Product: form.Get("product"), Group: form.Get("group"), Kind: form.Get("kind"), Since: since}
	if f.Group != "" && f.Product == "" {
		for _, g := range gs {
			if g.Group.ID == f.Group {
				f.Product = g.Product.ID
			}
		}
	}
	return f, form, nil
}

// errorReports is the tenant's report list (filters product, group, kind, since; paged by
// the API) with links that download the same selection; ?device=ID goes to that device's
// reports.
func errorReports(q *req) error {
	if id := q.r.URL.Query().Get("device"); id != "" {
		return q.redirect(q.deviceHref(id) + "/error-reports")
	}
	ps, gs, err := q.groups()
	if err != nil {
		return err
	}
	f, form, err := q.reportFilter(gs)
	if err != nil {
		return err
	}
	page, err := q.api.ListTenantErrorReports(q.ctx, q.tenant.ID, f, client.ListOptions{Limit: reportsPageSize, PageToken: q.r.URL.Query().Get("page_token")})
	if err != nil {
		return err
	}
	v := reportsListView{Products: ps, Groups: gs, Kinds: kindOptions(), Sinces: sinceOptions, Form: form, Issues: q.base() + "issues"}
	for _, r := range page.Items {
		v.Reports = append(v.Reports, reportRow{DeviceID: r.DeviceID, DeviceHref: q.deviceHref(r.DeviceID),
			Group: groupName(gs, r.ProductID, r.GroupID), ReceivedAt: r.ReceivedAt, Report: r.Report})
	}
	if page.NextPageToken != "" {
		v.Next = withPage(q.base()+"error-reports", form, page.NextPageToken)
	}
	for _, format := range []string{"csv", "json"} {
		dl := url.Values{"format": {format}}
		for k := range form {
			dl[k] = form[k]
		}
		link := withPage(q.base()+"error-reports/download", dl, "")
		if format == "csv" {
			v.CSV = link
		} else {
			v.JSON = link
		}
	}
	return q.render(http.StatusOK, "errors.html", "Error reports", v)
}

// healthWindows are the version-health page's windows.
var healthWindows = []option{{"24h", "24 hours"}, {"7d", "7 days"}, {"30d", "30 days"}}

var healthDurations = map[string]time.Duration{"24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour}

type healthView struct {
	Products []client.Product
	Windows  []option
	Form     url.Values
	Health   client.ImageHealth
	Chart    Chart
}

// health shows each image version's devices, crash-free devices (%) and crashes per
// device-hour over a window (the staged-rollout gate's inputs), with a chart of the
// crash-free percentage per version.
func health(q *req) error {
	qs := q.r.URL.Query()
	form := url.Values{"product": {qs.Get("product")}, "window": {qs.Get("window")}}
	if form.Get("window") == "" {
		form.Set("window", "7d")
	}
	window, ok := healthDurations[form.Get("window")]
	if !ok {
		return badRequest("window must be 24h, 7d or 30d.")
	}
	ps, err := q.api.ListProducts(q.ctx, q.tenant.ID, client.ListOptions{Limit: 1000})
	if err != nil {
		return err
	}
	h, err := q.api.GetImageHealth(q.ctx, q.tenant.ID, form.Get("product"), window)
	if err != nil {
		return err
	}
	v := healthView{Products: ps.Items, Windows: healthWindows, Form: form, Health: h,
		Chart: Chart{Title: "Crash-free devices (%) per version, last " + form.Get("window"), Max: 100, Unit: "%"}}
	for _, vh := range h.Versions {
		if vh.CrashFreePercent == nil {
			continue // no device runs it: no rate to draw (the table shows its crashes)
		}
		v.Chart.Points = append(v.Chart.Points, Point{Label: versionLabel(vh), Value: *vh.CrashFreePercent})
	}
	return q.render(http.StatusOK, "health.html", "Version health", v)
}

// versionLabel names a version briefly: the target's name (apps/NAME/VERSION,
// os/NAME/VERSION) and the version.
func versionLabel(vh client.VersionHealth) string {
	name := vh.Target
	if segs := strings.Split(vh.Target, "/"); len(segs) >= 2 {
		name = segs[1]
	}
	return name + " " + vh.Version
}

// percent formats an optional percentage; rate an optional rate.
func percent(p *float64) string {
	if p == nil {
		return "—"
	}
	return strconv.FormatFloat(*p, 'f', 1, 64) + " %"
}

func rate(p *float64) string {
	if p == nil {
		return "—"
	}
	return strconv.FormatFloat(*p, 'g', 4, 64)
}
