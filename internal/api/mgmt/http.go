package mgmt

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
)

// List is the shape of every list response.
type List[T any] struct {
	Items         []T    `json:"items"`
	NextPageToken string `json:"next_page_token,omitempty"`
}

// Page sizes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// page reads limit and page_token. The token is the opaque encoding of the last ID seen.
func (c *call) page() (store.Page, error) {
	q, err := url.ParseQuery(c.r.URL.RawQuery)
	p := store.Page{Limit: DefaultPageSize}
	if err != nil {
		return p, &problem.Error{Kind: problem.Invalid, Code: "invalid_query", Field: "query",
			Detail: "the query string is malformed"}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			return p, &problem.Error{Kind: problem.Invalid, Code: "invalid_limit", Field: "limit",
				Detail: "limit must be a whole number from 1 to 1000"}
		}
		p.Limit = n
	}
	if s := q.Get("page_token"); s != "" {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(b) == 0 || len(b) > 128 {
			return p, &problem.Error{Kind: problem.Invalid, Code: "invalid_page_token", Field: "page_token",
				Detail: "page_token is not one this server returned"}
		}
		p.After = string(b)
	}
	// Ask for one more than the page to learn whether another page follows.
	p.Limit++
	return p, nil
}

// listOf trims the extra item page() asked for and sets the next page token.
func listOf[T any](items []T, p store.Page, id func(T) string) List[T] {
	if items == nil {
		items = []T{}
	}
	if len(items) < p.Limit {
		return List[T]{Items: items}
	}
	items = items[:p.Limit-1]
	return List[T]{Items: items, NextPageToken: base64.RawURLEncoding.EncodeToString([]byte(id(items[len(items)-1])))}
}

// versionOf finds the Version field of an object response, for its ETag.
func versionOf(v any) (int64, bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return 0, false
	}
	f := rv.FieldByName("Version")
	if !f.IsValid() || f.Kind() != reflect.Int64 {
		return 0, false
	}
	return f.Int(), true
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// checkIfMatch enforces the route's If-Match rule against the stored version. A weak tag
// never matches (RFC 9110 section 13.1.1 uses strong comparison).
func (c *call) checkIfMatch(current int64) error {
	h := c.r.Header.Get("If-Match")
	if h == "" {
		if c.route.IfMatch == "required" {
			return &problem.Error{Kind: problem.PreconditionRequired, Code: "if_match_required", Field: "If-Match",
				Detail: "send If-Match with the ETag of the version you read, so concurrent edits cannot overwrite each other"}
		}
		return nil
	}
	want := etag(current)
	for _, tag := range strings.Split(h, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || tag == want {
			return nil
		}
	}
	return &problem.Error{Kind: problem.PreconditionFailed, Code: "etag_mismatch", Field: "If-Match",
		Detail: "the object changed since you read it (current ETag " + want + "); read it again and retry"}
}

// storeProblem maps store errors to problems. what names the object for NotFound.
func storeProblem(err error, what, id string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return problem.New(problem.NotFound, what+"_not_found", "no %s %s", strings.ReplaceAll(what, "_", " "), id)
	case errors.Is(err, store.ErrStale):
		return &problem.Error{Kind: problem.PreconditionFailed, Code: "etag_mismatch", Field: "If-Match",
			Detail: "the object changed since you read it; read it again and retry", Err: err}
	case errors.Is(err, store.ErrConflict):
		return &problem.Error{Kind: problem.Conflict, Code: "name_taken", Field: "name",
			Detail: "another " + strings.ReplaceAll(what, "_", " ") + " in the same scope already has this name", Err: err}
	case errors.Is(err, store.ErrInUse):
		return &problem.Error{Kind: problem.Conflict, Code: what + "_in_use", Detail: "the " + what + " is still in use", Err: err}
	}
	if p, ok := errors.AsType[*problem.Error](err); ok {
		return p
	}
	return problem.Wrap(err)
}

// Metrics are the API's Prometheus metrics.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the API's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_api_requests_total", Help: "Management API requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "moat_api_request_duration_seconds", Help: "Management API request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

func (m *Metrics) observe(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// pathID reads an identifier from the path; a malformed one is NotFound like a missing one.
func pathID(r *http.Request, name, prefix, what string) (string, error) {
	s := r.PathValue(name)
	if !validID(prefix, s) {
		return "", problem.New(problem.NotFound, what+"_not_found", "no %s %s", strings.ReplaceAll(what, "_", " "), truncate(s))
	}
	return s, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
