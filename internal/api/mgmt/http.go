package mgmt

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
)

// The pieces below live in internal/api/httpapi, shared by every audience; these names keep
// the handlers of this package reading as they did.

// List is the shape of every list response.
type List[T any] = httpapi.List[T]

// Page sizes.
const (
	DefaultPageSize = httpapi.DefaultPageSize
	MaxPageSize     = httpapi.MaxPageSize
)

// page reads limit and page_token (see httpapi.ParsePage).
func (c *call) page() (store.Page, error) { return httpapi.ParsePage(c.r) }

// listOf trims the extra item page() asked for and sets the next page token.
func listOf[T any](items []T, p store.Page, id func(T) string) List[T] {
	return httpapi.ListOf(items, p, id)
}

// checkIfMatch enforces the route's If-Match rule against the stored version.
func (c *call) checkIfMatch(current int64) error {
	return httpapi.CheckIfMatch(c.r, c.route.IfMatch, current)
}

// storeProblem maps store errors to problems. what names the object for NotFound.
func storeProblem(err error, what, id string) error { return httpapi.StoreProblem(err, what, id) }

// Metrics are the API's Prometheus metrics.
type Metrics = httpapi.Metrics

// NewMetrics registers the API's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics { return httpapi.NewMetrics(reg) }

// pathID reads an identifier from the path; a malformed one is NotFound like a missing one.
func pathID(r *http.Request, name, prefix, what string) (string, error) {
	s := r.PathValue(name)
	if !validID(prefix, s) {
		return "", problem.New(problem.NotFound, what+"_not_found", "no %s %s", strings.ReplaceAll(what, "_", " "), truncate(s))
	}
	return s, nil
}

func truncate(s string) string { return httpapi.Truncate(s) }
