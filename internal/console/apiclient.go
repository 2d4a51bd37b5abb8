package console

import (
	"errors"
	"net/http"
	"net/http/httptest"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/mgmt"
)

// inProcess is the transport of the console's API client: it serves each request with the
// management API's own handler, in this process, as the session's principal
// (mgmt.WithPrincipal), with the console request's client address and request ID, so the
// API's authorization, audit events and logs are those of the person's request. Responses
// are bounded by the API's page sizes.
type inProcess struct {
	api        http.Handler
	q          *req
	remoteAddr string
}

// RoundTrip serves r in-process. The request is cloned, never changed.
func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.q.principal == nil {
		return nil, errors.New("console: API call without a session") // unreachable: wrap loads the session first
	}
	ctx := mgmt.WithPrincipal(r.Context(), t.q.principal)
	in := r.Clone(ctx)
	in.RemoteAddr = t.remoteAddr
	in.RequestURI = in.URL.RequestURI()
	if in.Body == nil {
		in.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	t.api.ServeHTTP(rec, in)
	return rec.Result(), nil
}

// client returns the API client of one console request. Its context (q.ctx) carries the
// request ID, which the API keeps for its own exchange.
func (c *Console) client(q *req) (*client.Client, error) {
	hc := &http.Client{Transport: inProcess{api: c.apiMux, q: q, remoteAddr: q.r.RemoteAddr},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return client.New("http://127.0.0.1", client.WithHTTPClient(hc), client.WithUserAgent("moat-console"))
}
