package mgmt

import (
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/moat-iot/moat/internal/insight"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
)

// The tenant-wide error-report routes (issue 11, error-report insights): the report list,
// its streamed download and the health of each image version. Each reads the tenant of the
// path only, through ForTenant (rule 3; TestAPI_CrossTenantIsNotFound walks them).

// query parses the query string; a malformed one is a problem.
func (c *call) query() (url.Values, error) {
	q, err := url.ParseQuery(c.r.URL.RawQuery)
	if err != nil {
		return nil, &problem.Error{Kind: problem.Invalid, Code: "invalid_query", Field: "query", Detail: "the query string is malformed"}
	}
	return q, nil
}

// reportFilter reads the report filters of the query string.
func (c *call) reportFilter() (store.ReportFilter, url.Values, error) {
	q, err := c.query()
	if err != nil {
		return store.ReportFilter{}, nil, err
	}
	f, err := insight.ParseFilter(q)
	return f, q, err
}

// listTenantErrorReports lists the tenant's reports, newest received first, filtered;
// the page token is the position of the last report of the page.
func (a *API) listTenantErrorReports(c *call) (any, error) {
	f, _, err := c.reportFilter()
	if err != nil {
		return nil, err
	}
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	after, err := insight.DecodeCursor(p.After)
	if err != nil {
		return nil, err
	}
	var items []store.TenantReport
	err = a.readTenant(c, func(tt store.TenantTx) error {
		items, err = tt.ErrorReports().ListTenant(c.ctx, f, after, p.Limit)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "tenant", string(c.tenant))
	}
	return listOf(items, p, insight.PagePosition), nil
}

// exportWriteTimeout is how long the download may take to write one batch: the server's
// write timeout ends other responses, but a download of a million reports runs for
// minutes while it keeps moving.
const exportWriteTimeout = time.Minute

// exportErrorReports streams every report the filters select as CSV or JSON
// (insight.Export: one batch in memory at a time). The status and headers are sent with
// the first batch, so a failure before it is a problem document; a failure after it cuts
// the connection, so that the client sees a broken download rather than a short one that
// looks whole.
func (a *API) exportErrorReports(c *call) (any, error) {
	f, q, err := c.reportFilter()
	if err != nil {
		return nil, err
	}
	format, err := insight.ParseFormat(q.Get("format"))
	if err != nil {
		return nil, err
	}
	rc := http.NewResponseController(c.w)
	w := &lazyWriter{w: c.w, start: func(h http.Header) {
		h.Set("Content-Type", format.ContentType())
		h.Set("Content-Disposition", `attachment; filename="error-reports-`+c.now.Format("20060102T150405Z")+`.`+string(format)+`"`)
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
	}}
	_ = rc.SetWriteDeadline(time.Now().Add(exportWriteTimeout))
	n, err := insight.Export(c.ctx, a.store, c.tenant, f, w, insight.ExportOptions{Format: format, AfterBatch: func() error {
		if err := rc.Flush(); err != nil {
			return err
		}
		// Best effort: a writer that cannot move its deadline keeps the server's.
		_ = rc.SetWriteDeadline(time.Now().Add(exportWriteTimeout))
		return nil
	}})
	if err != nil && !w.started {
		return nil, storeProblem(err, "tenant", string(c.tenant))
	}
	if err != nil {
		level := slog.LevelWarn
		if c.ctx.Err() != nil {
			level = slog.LevelInfo // the client went away: nothing on the server to look at
		}
		a.log.Log(c.ctx, level, "error-report download cut off", "request_id", c.requestID, "tenant_id", c.tenant, "reports", n, "err", err)
		panic(http.ErrAbortHandler) // ends the response without its last chunk
	}
	if !w.started {
		_, _ = w.Write(nil) // headers for an empty result (no batch wrote anything yet)
	}
	return alreadyWritten{}, nil
}

// lazyWriter sends the status and headers at the first write.
type lazyWriter struct {
	w       http.ResponseWriter
	start   func(http.Header)
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.start(l.w.Header())
		l.w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	return l.w.Write(p)
}

// getImageHealth answers the health of each image version over a window (insight.Health).
func (a *API) getImageHealth(c *call) (any, error) {
	q, err := c.query()
	if err != nil {
		return nil, err
	}
	var v problem.Validation
	pid := q.Get("product")
	if pid != "" {
		if _, err := insight.ParseFilter(url.Values{"product": {pid}}); err != nil {
			v.Add("product", "invalid_product", "product must be a product ID")
		}
	}
	window, err := insight.ParseWindow(q.Get("window"))
	if err != nil {
		p := problem.From(err)
		v.Add(p.Field, p.Code, "%s", p.Detail)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	out, err := insight.Health(c.ctx, a.store, c.tenant, insight.HealthQuery{ProductID: product.ID(pid), Window: window, Now: c.now})
	if err != nil {
		return nil, storeProblem(err, "tenant", string(c.tenant))
	}
	return out, nil
}

// reportFilterDescriptions describe the report filters in the OpenAPI document.
var reportFilterDescriptions = map[string]string{
	"product":       "Only reports of devices now in this product (ID).",
	"group":         "Only reports of devices now in this device group (ID; needs product).",
	"device":        "Only reports of this device.",
	"kind":          "Only reports of this kind: app_crash, update_failed, attestation_refused, capability_denied or agent.",
	"image_path":    "Only reports naming this image path (apps/<name>/<version> or os/<name>/<version>).",
	"image_version": "Only reports naming this image version.",
	"since":         "Only reports received at or after this time (RFC 3339).",
	"until":         "Only reports received before this time (RFC 3339).",
	"format":        "csv (the default; columns in docs/error-reports.md) or json (one JSON array of the list's objects).",
}

// filterDescriptions describe the query filters of some operations in the OpenAPI
// document, by operation ID; a filter without one reads "Only the object with this NAME".
var filterDescriptions = map[string]map[string]string{
	"listTenantErrorReports": reportFilterDescriptions,
	"exportErrorReports":     reportFilterDescriptions,
	"getImageHealth": {
		"product": "Only devices now in this product (ID), and their reports.",
		"window":  "How far back the figures reach, a Go duration from 1h to 2160h (default 168h).",
	},
}
