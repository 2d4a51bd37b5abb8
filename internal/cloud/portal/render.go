package portal

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/webui"
)

// funcs are the helpers templates may call. Each returns text that html/template escapes,
// except barChart, which builds its SVG from escaped values (webui.BarChart).
var funcs = template.FuncMap{
	"barChart": webui.BarChart,
	"number":   webui.Number,
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"day": func(t time.Time) string { return t.UTC().Format("2006-01-02") },
}

func parseTemplates() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("portal: parse template %s: %w", base, err)
		}
		out[base] = t
	}
	return out, nil
}

// view is what the layout renders around a page's Data.
type view struct {
	Title string
	Owner *cloudstore.Owner
	CSRF  string
	// Error is a refusal to show above the page's form; RetryAfter, when set, is sent too.
	Error      string
	RetryAfter time.Duration
	Notice     string
	Data       any
}

// page renders a page of q's session with status.
func (p *Portal) page(q *req, status int, name string, v view) error {
	v.Owner, v.CSRF = q.owner, q.csrf
	p.render(q.w, q.r, status, name, v)
	return nil
}

func (p *Portal) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	var buf bytes.Buffer
	if err := p.pages[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		p.log.ErrorContext(r.Context(), "render portal page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	if v.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(v.RetryAfter.Round(time.Second)/time.Second)+1))
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
