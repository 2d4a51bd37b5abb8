package console_test

import (
	"encoding/csv"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/moat-iot/moat/client"
)

// TestConsole_InsightPages reads each insight page as the tenant's Administrator: the
// issues, an issue with its chart and reports linking to their device, the tenant-wide
// list, version health with its chart, and the device's update state and history. Device
// text is escaped in the HTML.
func TestConsole_InsightPages(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	w := newWorld(t, p)
	b := newBrowser(t, p.Server)
	b.signIn(w.adminTok)
	a := "/ui/t/" + p.Tenant
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/issues", []string{w.issue, `<td class="message">` + html.EscapeString(scriptPayload), "No error issues." + "|"}},
		{"/issues?kind=update_failed", []string{"No error issues."}},
		{"/issues?sort=reports&since=7d&product=DW100", []string{w.issue}},
		{"/issues/" + w.issue, []string{`<svg class="chart"`, "apps/dw100-app", "1.0.0", `href="` + a + "/devices/" + w.device + `"`, html.EscapeString(imgPayload)}},
		{"/error-reports", []string{"Download CSV", a + "/error-reports/download?format=csv", html.EscapeString(formulaPayload)}},
		{"/error-reports?kind=app_crash&since=24h&group=" + w.group.ID, []string{"format=csv&amp;group=" + w.group.ID + "&amp;kind=app_crash&amp;since=24h"}},
		{"/health", []string{`<svg class="chart"`, "dw100-app 1.0.0", "apps/dw100-app/1.0.0", "50.0 %"}},
		{"/health?window=24h", []string{"last 24h"}},
		{"/devices/" + w.device, []string{`id="last-seen"`, `class="warn">failed</span>`, "512 KiB of 2 MiB", "health_check_failed", html.EscapeString(scriptPayload)}},
	} {
		pg := b.get(a + tc.path)
		if pg.status != http.StatusOK {
			t.Errorf("GET %s = %d, want 200: %s", tc.path, pg.status, pg.body)
			continue
		}
		for _, want := range tc.want {
			if strings.HasSuffix(want, "|") { // must not appear
				if strings.Contains(pg.body, strings.TrimSuffix(want, "|")) {
					t.Errorf("GET %s shows %q", tc.path, strings.TrimSuffix(want, "|"))
				}
				continue
			}
			if !strings.Contains(pg.body, want) {
				t.Errorf("GET %s lacks %q", tc.path, want)
			}
		}
		if strings.Contains(pg.body, scriptPayload) || strings.Contains(pg.body, imgPayload) {
			t.Errorf("GET %s holds a payload unescaped", tc.path)
		}
	}
	for _, path := range []string{"/issues?since=1y", "/health?window=1h", "/error-reports?kind=bogus", "/error-reports/download?format=xlsx",
		"/error-reports/download?format=csv&kind=bogus"} {
		if pg := b.get(a + path); pg.status != http.StatusBadRequest || !strings.Contains(pg.body, `id="error-message"`) {
			t.Errorf("GET %s = %d, want 400 with the console's error page: %s", path, pg.status, pg.body)
		}
	}
}

// TestConsole_DownloadStreamsTheAPIExport downloads the reports through the console with
// the session cookie only: the CSV is the API's attachment, unbuffered (no length known
// in advance), with the device's formula neutralised; JSON is the list's objects; the
// filters apply.
func TestConsole_DownloadStreamsTheAPIExport(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	w := newWorld(t, p)
	b := newBrowser(t, p.Server)
	b.signIn(w.adminTok)
	a := "/ui/t/" + p.Tenant + "/error-reports/download"

	pg := b.get(a + "?format=csv")
	if pg.status != http.StatusOK || pg.header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		!strings.HasPrefix(pg.header.Get("Content-Disposition"), "attachment;") || pg.header.Get("Content-Length") != "" {
		t.Fatalf("CSV download = %d %v, want 200, text/csv, an attachment, streamed", pg.status, pg.header)
	}
	rows, err := csv.NewReader(strings.NewReader(pg.body)).ReadAll()
	if err != nil || len(rows) != 7 {
		t.Fatalf("CSV = %d rows, %v; want a header and 6 reports:\n%s", len(rows), err, pg.body)
	}
	msg, id := indexOf(rows[0], "message"), indexOf(rows[0], "report_id")
	var got []string
	for _, r := range rows[1:] {
		if r[id] == formulaID {
			got = append(got, r[msg])
		}
	}
	if len(got) != 1 || got[0] != "'"+formulaPayload {
		t.Errorf("message cells of the formula report = %q, want one, neutralised: %q", got, "'"+formulaPayload)
	}

	pg = b.get(a + "?format=json&kind=app_crash&since=24h")
	var items []client.TenantErrorReport
	if err := json.Unmarshal([]byte(pg.body), &items); err != nil || pg.status != http.StatusOK {
		t.Fatalf("JSON download = %d, %v:\n%s", pg.status, err, pg.body)
	}
	// Received within 24 hours: the newest payload report and the formula report (1 h ago).
	if len(items) != 2 || items[1].Report.ID != formulaID || items[1].Report.Message != formulaPayload {
		t.Errorf("JSON download since 24h = %+v, want 2 reports, the formula second and as the device wrote it", items)
	}
}

func indexOf(row []string, col string) int {
	for i, c := range row {
		if c == col {
			return i
		}
	}
	return -1
}

// TestConsole_FleetStatus reads the overview's should-vs-does matrix and the device list
// filtered by state: each count links to its devices, and the list shows should, does and
// state beside each device.
func TestConsole_FleetStatus(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	w := newWorld(t, p)
	b := newBrowser(t, p.Server)
	b.signIn(w.adminTok)
	a := "/ui/t/" + p.Tenant
	current := a + "/devices?" + url.Values{"group": {w.group.ID}, "product": {"DW100"}, "state": {"current"}}.Encode()
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/", []string{"Should run vs does run", "2 devices: 2 current, 0 pending", "moat-os 1.0.0 &#43; any app", "moat-os 1.0.0 &#43; dw100-app 1.0.0",
			`href="` + html.EscapeString(current) + `"`, html.EscapeString(imgPayload)}},
		{"/devices?product=DW100&state=current", []string{w.device[:12], w.evil[:12], "Should run", `class="state state-current">current`, "dw100-app 1.0.0"}},
		{"/devices?state=failed", []string{"No devices."}},
		{"/devices?group=" + w.group.ID, []string{w.device[:12], "DW100/Production"}},
	} {
		pg := b.get(a + tc.path)
		if pg.status != http.StatusOK {
			t.Errorf("GET %s = %d, want 200: %s", tc.path, pg.status, pg.body)
			continue
		}
		for _, want := range tc.want {
			if !strings.Contains(pg.body, want) {
				t.Errorf("GET %s lacks %q", tc.path, want)
			}
		}
	}
	if pg := b.get(a + "/devices?group=" + w.group.ID + "&state=current"); strings.Contains(pg.body, w.evil[:12]) {
		t.Errorf("devices of DW100/Production list the device of another group")
	}
	if pg := b.get(a + "/devices?product=DW100&state=bogus"); pg.status != http.StatusBadRequest {
		t.Errorf("GET devices?state=bogus = %d, want 400", pg.status)
	}
}
