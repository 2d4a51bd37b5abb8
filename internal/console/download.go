package console

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/mgmt"
)

// maxProblemBytes bounds what the console keeps of a refused download's answer: a problem
// document, never a report.
const maxProblemBytes = 16 << 10

// downloadReports streams the tenant's error reports (CSV or JSON, the report list's
// filters) to the browser through the session, never a bearer token in the browser: the
// management API's own export handler runs in-process as the session's principal and
// writes straight into the console's ResponseWriter, batch by batch, so the console holds
// one batch at most, as the API does (insight.Export), and the API's flushes and write
// deadlines reach the connection (Unwrap). Its authorization, tenant check (rule 3, 404
// for another tenant: TestConsole_CrossTenantIsNotFound) and formula neutralising
// (TestBrowser_ConsoleInsights) are the API's. A refusal before the first byte (a bad
// filter) is shown as a console error page; a failure midway cuts the connection, as the
// API does, so the browser sees a failed download rather than a short one.
func downloadReports(q *req) error {
	qs := q.r.URL.Query()
	format := qs.Get("format")
	if format != "csv" && format != "json" {
		return badRequest("format must be csv or json.")
	}
	_, gs, err := q.groups()
	if err != nil {
		return err
	}
	f, _, err := q.reportFilter(gs)
	if err != nil {
		return err
	}
	// Only the console's own filters reach the API, re-encoded: the browser's query string
	// is not passed through.
	api := url.Values{"format": {format}}
	for k, v := range map[string]string{"product": f.Product, "group": f.Group, "kind": f.Kind} {
		if v != "" {
			api.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		api.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	u := "http://127.0.0.1/api/v1/tenants/" + url.PathEscape(q.tenant.ID) + "/error-reports/export?" + api.Encode()
	in, err := http.NewRequestWithContext(mgmt.WithPrincipal(q.ctx, q.principal), http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	in.RemoteAddr = q.r.RemoteAddr
	in.RequestURI = in.URL.RequestURI()
	in.Header.Set("User-Agent", "moat-console")
	w := &downloadWriter{w: q.w}
	q.c.apiMux.ServeHTTP(w, in)
	if w.status == 0 || w.status == http.StatusOK {
		return nil
	}
	return w.problem()
}

// downloadWriter passes a successful (200) answer through to the browser unbuffered, and
// keeps a refusal's problem document (bounded) for a console error page instead.
type downloadWriter struct {
	w       http.ResponseWriter
	status  int
	refusal bytes.Buffer
}

func (d *downloadWriter) Header() http.Header { return d.w.Header() }

func (d *downloadWriter) WriteHeader(code int) {
	if d.status != 0 {
		return
	}
	d.status = code
	if code == http.StatusOK {
		d.w.WriteHeader(code)
	}
}

func (d *downloadWriter) Write(p []byte) (int, error) {
	if d.status == 0 {
		d.WriteHeader(http.StatusOK)
	}
	if d.status == http.StatusOK {
		return d.w.Write(p)
	}
	if room := maxProblemBytes - d.refusal.Len(); room > 0 {
		d.refusal.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Unwrap lets the export handler's http.ResponseController flush each batch and move the
// connection's write deadline.
func (d *downloadWriter) Unwrap() http.ResponseWriter { return d.w }

// problem is the refusal as the error the console shows; the API's headers for it are
// dropped, as the console writes its own page.
func (d *downloadWriter) problem() error {
	h := d.w.Header()
	for _, k := range []string{"Content-Type", "Content-Length", "Content-Disposition", "Content-Language"} {
		h.Del(k)
	}
	var p struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	_ = json.Unmarshal(d.refusal.Bytes(), &p) // a body that is no problem leaves the status alone
	return &client.Error{Status: d.status, Code: p.Code, Detail: p.Detail}
}
