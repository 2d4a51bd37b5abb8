package console

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/webui"
)

// pageTemplate is one page's template: the layout with the page's "content".
type pageTemplate = template.Template

// funcs are the helpers templates may call. Each returns text that html/template escapes,
// except barChart, which builds its SVG from escaped values (webui.BarChart).
var funcs = template.FuncMap{
	"barChart":   webui.BarChart,
	"short":      short,
	"when":       when,
	"add":        func(a, b int) int { return a + b },
	"stateClass": updateStateClass,
	"progress":   progress,
	"number":     number,
	"percent":    percent,
	"rate":       rate,
	"soak":       soak,
}

func parseTemplates() (map[string]*pageTemplate, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*pageTemplate{}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" || base == "partials.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: parse template %s: %w", base, err)
		}
		out[base] = t
	}
	return out, nil
}

// view is what the layout renders around a page's Data.
type view struct {
	Title     string
	RequestID string
	User      string
	CSRF      string
	Tenant    *client.Tenant
	Role      string
	Nav       []navLink
	Data      any
}

type navLink struct {
	Label, Href string
	Active      bool
}

// render writes a page of a signed-in session with status.
func (q *req) render(status int, name, title string, data any) error {
	v := view{Title: title, RequestID: q.id, CSRF: q.csrf, Data: data}
	if q.principal != nil {
		v.User = q.principal.User.Name
	}
	if t := q.tenant; t != nil {
		v.Tenant = t
		v.Role = string(q.principal.RoleIn(tenantID(t.ID)))
		v.Nav = q.nav()
	}
	return q.write(status, name, v)
}

// renderBare writes a page outside a session (sign-in).
func (q *req) renderBare(status int, name, title string, data any) error {
	return q.write(status, name, view{Title: title, RequestID: q.id, Data: data})
}

func (q *req) write(status int, name string, v view) error {
	t, ok := q.c.pages[name]
	if !ok {
		return fmt.Errorf("console: no template %s", name)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		return fmt.Errorf("console: render %s: %w", name, err)
	}
	h := q.w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	q.w.WriteHeader(status)
	_, err := q.w.Write(buf.Bytes())
	return err
}

// errorView is the error page's data.
type errorView struct {
	Status  int
	Message string
}

// fail answers err: the sign-in page for a missing session, else an error page with a
// status that matches the API's answer. Internal causes are logged, never shown.
func (q *req) fail(err error, x *httpapi.Exchange) {
	status, msg := http.StatusInternalServerError, "Something went wrong. Quote the request ID to your operator."
	var ce *client.Error
	switch {
	case errors.Is(err, errUnauthenticated):
		if q.r.Method == http.MethodGet {
			http.Redirect(q.w, q.r, "/ui/sign-in", http.StatusSeeOther)
			return
		}
		status, msg = http.StatusUnauthorized, "Your session has ended. Sign in again."
	case errors.Is(err, errCSRF):
		status, msg = http.StatusForbidden, "This form was not sent from a page of this console (missing or wrong CSRF token). Reload the page and try again."
	case errors.Is(err, errNotFound):
		status, msg = http.StatusNotFound, "There is no such page."
	case errors.As(err, &ce):
		status, msg = ce.Status, ce.Detail
		switch {
		case ce.Status == http.StatusUnauthorized:
			msg = "Your session has ended. Sign in again."
		case ce.Status == http.StatusNotFound:
			msg = "Not found: " + ce.Detail
		case ce.Status >= 500:
			q.c.log.ErrorContext(q.ctx, "console API call failed", "request_id", q.id, "status", ce.Status, "code", ce.Code)
			msg = "The service could not answer. Quote the request ID to your operator."
		}
	default:
		if p := x.Problem(err); p.Kind != problem.Internal {
			status, msg = p.Kind.Status(), p.Detail
			break
		}
		q.c.log.ErrorContext(q.ctx, "console request failed", "request_id", q.id, "path", q.r.URL.Path, "err", err)
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	v := errorView{Status: status, Message: msg}
	var werr error
	if q.principal != nil {
		werr = q.render(status, "error.html", http.StatusText(status), v)
	} else {
		werr = q.renderBare(status, "error.html", http.StatusText(status), v)
	}
	if werr != nil {
		q.c.log.ErrorContext(q.ctx, "console error page failed", "request_id", q.id, "err", werr)
		http.Error(q.w, http.StatusText(status), status)
	}
}

// short abbreviates a long ID for tables; the full ID is in the link and its title.
func short(s string) string {
	if len(s) > 16 {
		return s[:12] + "…"
	}
	return s
}

// when formats a time for people, in UTC.
func when(t any) string {
	switch v := t.(type) {
	case time.Time:
		if v.IsZero() {
			return "—"
		}
		return v.UTC().Format("2006-01-02 15:04:05 UTC")
	case *time.Time:
		if v == nil {
			return "—"
		}
		return v.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	return strings.TrimSpace(fmt.Sprint(t))
}
