// Package cloudapi is the HTTP API of the manufacturer cloud (`moat cloud`): the devices it
// has seen, their telemetry and summaries, alerts, and remote diagnostics, for the tenant's
// staff and the CLI (`moat cloud telemetry|alerts|diagnostics`, client/cloud.go). It is
// another audience of internal/api/httpapi's core: request IDs, bounded bodies, strict
// decoding, RFC 9457 problems, one access line and the same metrics per request.
//
// Who may call (DESIGN rule 3): every route but the OpenAPI document needs a bearer token of
// a member of the cloud's tenant, checked by internal/cloud/operator with the security
// service; a token of another tenant is 401, like an unknown one, and sees nothing
// (TestAPI_OtherTenantSeesNothing). Reading needs the Reader role, running diagnostics
// Contributor or Administrator (TestAPI_ReaderCannotRunDiagnostics). Checks of tokens not
// in the verifier's cache are capped at MaxTokenChecks at once; past it 503 with
// Retry-After, so a flood of made-up tokens cannot pile requests onto the security service
// (TestAPI_CapsTokenChecks).
package cloudapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/diag"
	"github.com/moat-iot/moat/internal/cloud/operator"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/telemetry"
)

// MaxTokenChecks bounds the token checks in flight at once.
const MaxTokenChecks = 64

// Verifier checks a bearer token (internal/cloud/operator).
type Verifier interface {
	Verify(ctx context.Context, token string) (operator.Principal, error)
}

// Config configures the API.
type Config struct {
	Store    *cloudstore.Store
	Diag     *diag.Service
	Verifier Verifier
	Metrics  *httpapi.Metrics
	Logger   *slog.Logger
	Now      func() time.Time
}

// API serves the cloud's routes.
type API struct {
	cfg    Config
	log    *slog.Logger
	checks *httpapi.Limiter
}

// access is what a route needs of its caller.
type access int

const (
	read access = iota
	operate
	public
)

// route is one operation.
type route struct {
	method, pattern, operationID, summary string
	access                                access
	// body is the JSON body's type; nil for none.
	body reflect.Type
	// resp is the response's type; list says it is a page of them.
	resp   reflect.Type
	list   bool
	status int
	// query names the query parameters besides limit and page_token.
	query   []string
	handler func(a *API, c *call) (any, int, error)
	// limit, when set, replaces maxBody for this route's body.
	limit int64
	// conflict says the operation can meet a state that refuses it (409).
	conflict bool
}

// call is one request as a handler sees it.
type call struct {
	ctx context.Context
	r   *http.Request
	p   operator.Principal
	// body is the decoded, validated JSON body.
	body any
}

// New returns the API.
func New(cfg Config) (*API, error) {
	var errs []error
	if cfg.Store == nil || cfg.Diag == nil || cfg.Verifier == nil || cfg.Metrics == nil || cfg.Now == nil {
		errs = append(errs, errors.New("store, diag, verifier, metrics and now are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cloud api: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &API{cfg: cfg, log: log, checks: httpapi.NewLimiter(MaxTokenChecks)}, nil
}

// routes is the route table, in the order the OpenAPI document lists it.
func routes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/openapi.json", operationID: "getOpenAPI", summary: "This document", access: public,
			status: 200, handler: (*API).openAPI},
		{method: "GET", pattern: "/api/v1/devices", operationID: "listDevices", summary: "List the devices that have connected, by ID",
			resp: reflect.TypeFor[client.CloudDevice](), list: true, status: 200, query: []string{"product"}, handler: (*API).listDevices},
		{method: "GET", pattern: "/api/v1/devices/{device}/telemetry", operationID: "listTelemetry", summary: "List a device's raw readings, oldest first",
			resp: reflect.TypeFor[client.Reading](), list: true, status: 200, query: []string{"since", "until", "metric"}, handler: (*API).listTelemetry},
		{method: "GET", pattern: "/api/v1/devices/{device}/summaries", operationID: "listSummaries", summary: "List a device's per-cycle or hourly summaries, oldest first",
			resp: reflect.TypeFor[client.Summary](), list: true, status: 200, query: []string{"per", "since"}, handler: (*API).listSummaries},
		{method: "GET", pattern: "/api/v1/devices/{device}/events", operationID: "listEvents", summary: "List a device's events, oldest first",
			resp: reflect.TypeFor[client.CloudEvent](), list: true, status: 200, query: []string{"since", "until"}, handler: (*API).listEvents},
		{method: "POST", pattern: "/api/v1/devices/{device}/diagnostics", operationID: "runDiagnostic", summary: "Ask a device to run a diagnostic",
			access: operate, body: reflect.TypeFor[diagnosticCreate](), resp: reflect.TypeFor[client.Diagnostic](), status: 202, handler: (*API).runDiagnostic},
		{method: "GET", pattern: "/api/v1/alerts", operationID: "listAlerts", summary: "List alerts, newest first",
			resp: reflect.TypeFor[client.Alert](), list: true, status: 200, query: []string{"state", "device", "product"}, handler: (*API).listAlerts},
		{method: "GET", pattern: "/api/v1/alerts/{alert}", operationID: "getAlert", summary: "Show an alert with its evidence and diagnostics",
			resp: reflect.TypeFor[client.Alert](), status: 200, handler: (*API).getAlert},
		{method: "GET", pattern: "/api/v1/diagnostics", operationID: "listDiagnostics", summary: "List diagnostics requests, newest first",
			resp: reflect.TypeFor[client.Diagnostic](), list: true, status: 200, query: []string{"device"}, handler: (*API).listDiagnostics},
		{method: "GET", pattern: "/api/v1/diagnostics/{diagnostic}", operationID: "getDiagnostic", summary: "Show a diagnostics request; wait holds the answer until it finishes",
			resp: reflect.TypeFor[client.Diagnostic](), status: 200, query: []string{"wait"}, handler: (*API).getDiagnostic},
		{method: "GET", pattern: "/api/v1/service-requests", operationID: "listServiceRequests", summary: "List service requests, newest first",
			resp: reflect.TypeFor[client.ServiceRequest](), list: true, status: 200, query: []string{"state", "device"}, handler: (*API).listServiceRequests},
		{method: "PATCH", pattern: "/api/v1/service-requests/{request}", operationID: "updateServiceRequest", summary: "Change a service request's state and its note to the owner",
			access: operate, body: reflect.TypeFor[serviceRequestUpdate](), resp: reflect.TypeFor[client.ServiceRequest](), status: 200, conflict: true, handler: (*API).updateServiceRequest},
		{method: "GET", pattern: "/api/v1/reservations", operationID: "listReservations", summary: "List warranty part reservations, newest first",
			resp: reflect.TypeFor[client.Reservation](), list: true, status: 200, query: []string{"state", "device"}, handler: (*API).listReservations},
		{method: "POST", pattern: "/api/v1/claim-codes", operationID: "createClaimCodes", summary: "Make claim codes for devices at manufacture; the codes are shown only in this answer",
			access: operate, body: reflect.TypeFor[claimCodesCreate](), resp: reflect.TypeFor[client.ClaimCodes](), status: 201, limit: claimCodesBody, conflict: true, handler: (*API).createClaimCodes},
		{method: "POST", pattern: "/api/v1/sales", operationID: "recordSale", summary: "Record or correct an appliance's sale (it starts the warranty)",
			access: operate, body: reflect.TypeFor[saleRecord](), resp: reflect.TypeFor[client.Sale](), status: 201, handler: (*API).recordSale},
	}
}

// maxBody is every route's body limit: a diagnostics request (its arguments at most
// telemetry.MaxArgsBytes) and room for its other fields.
const maxBody = telemetry.MaxArgsBytes + 1024

// Register adds the routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	for _, rt := range routes() {
		mux.HandleFunc(rt.method+" "+rt.pattern, func(w http.ResponseWriter, r *http.Request) { a.serve(rt, w, r) })
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		x := httpapi.Begin(w, r, 0)
		x.Fail(a.log, "unknown", problem.New(problem.NotFound, "not_found", "no such route: %s %s", r.Method, httpapi.Truncate(r.URL.Path)))
		x.Done(a.log, a.cfg.Metrics, "unknown")
	})
}

func (a *API) serve(rt route, w http.ResponseWriter, r *http.Request) {
	limit := int64(0)
	if rt.body != nil {
		limit = maxBody
		if rt.limit > 0 {
			limit = rt.limit
		}
	}
	x := httpapi.Begin(w, r, limit)
	name := rt.method + " " + rt.pattern
	user := ""
	defer func() { x.Done(a.log, a.cfg.Metrics, name, "user", user) }()
	if err := x.CheckLength(); err != nil {
		x.Fail(a.log, name, err)
		return
	}
	c := &call{ctx: x.R.Context(), r: x.R}
	if rt.access != public {
		p, err := a.authenticate(x)
		if err != nil {
			x.Fail(a.log, name, err)
			return
		}
		c.p, user = p, p.UserName
		if rt.access == operate && !p.CanOperate() {
			x.Fail(a.log, name, problem.New(problem.Forbidden, "forbidden", "%s needs the Contributor or Administrator role; you are %s", rt.operationID, p.Role))
			return
		}
	}
	if rt.body != nil {
		v, err := httpapi.ReadJSON(x.R, rt.body)
		if err != nil {
			x.Fail(a.log, name, err)
			return
		}
		c.body = v
	}
	out, status, err := rt.handler(a, c)
	if err != nil {
		x.Fail(a.log, name, storeProblem(err))
		return
	}
	writeJSON(x.W, status, out)
}

func (a *API) authenticate(x httpapi.Exchange) (operator.Principal, error) {
	h := x.R.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || token == "" {
		x.W.Header().Set("WWW-Authenticate", `Bearer realm="moat cloud"`)
		return operator.Principal{}, problem.New(problem.Unauthenticated, "unauthenticated", "send your moat API token as 'Authorization: Bearer TOKEN'")
	}
	release, err := a.checks.Acquire(x.R.Context(), x.W.Header())
	if err != nil {
		return operator.Principal{}, err
	}
	defer release()
	p, err := a.cfg.Verifier.Verify(x.R.Context(), token)
	switch {
	case errors.Is(err, operator.ErrUnauthenticated):
		x.W.Header().Set("WWW-Authenticate", `Bearer realm="moat cloud", error="invalid_token"`)
		return p, problem.New(problem.Unauthenticated, "unauthenticated", "the token is not a valid moat token of a member of this cloud's tenant")
	case errors.Is(err, operator.ErrUnavailable):
		x.W.Header().Set("Retry-After", "5")
		return p, &problem.Error{Kind: problem.Unavailable, Code: "security_service_unavailable", Detail: "the security service cannot be reached to check the token; retry later", Err: err}
	case err != nil:
		return p, err
	}
	return p, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; nothing to tell it
}

// storeProblem maps the store's sentinels to problems.
func storeProblem(err error) error {
	if _, ok := errors.AsType[*problem.Error](err); ok {
		return err
	}
	switch {
	case errors.Is(err, cloudstore.ErrNotFound):
		return &problem.Error{Kind: problem.NotFound, Code: "not_found", Detail: "no such object", Err: err}
	case errors.Is(err, cloudstore.ErrInvalid):
		return &problem.Error{Kind: problem.Invalid, Code: "invalid_request", Detail: strings.TrimPrefix(err.Error(), cloudstore.ErrInvalid.Error()+": "), Err: err}
	case errors.Is(err, cloudstore.ErrConflict):
		return &problem.Error{Kind: problem.Conflict, Code: "conflict", Detail: "the request conflicts with the current state", Err: err}
	case errors.Is(err, diag.ErrBusy):
		return &problem.Error{Kind: problem.Unavailable, Code: "server_busy", Detail: "too many callers are waiting; retry later", Err: err}
	}
	return err
}

// --- query parameters

func deviceParam(c *call) (string, error) {
	d := c.r.PathValue("device")
	if !telemetry.ValidDeviceID(d) {
		return "", problem.New(problem.NotFound, "not_found", "no such device")
	}
	return d, nil
}

func timeParam(c *call, name string) (time.Time, error) {
	s := c.r.URL.Query().Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &problem.Error{Kind: problem.Invalid, Code: "invalid_" + name, Field: name, Detail: name + " must be an RFC 3339 time"}
	}
	return t, nil
}

func limitParam(c *call) (int, error) {
	s := c.r.URL.Query().Get("limit")
	if s == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 1000 {
		return 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_limit", Field: "limit", Detail: "limit must be 1 to 1000"}
	}
	return n, nil
}

// pageToken is an opaque token: base64url of a JSON cursor.
func pageToken(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func readPageToken(c *call, into any) (bool, error) {
	s := c.r.URL.Query().Get("page_token")
	if s == "" {
		return false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 512 || json.Unmarshal(b, into) != nil {
		return false, &problem.Error{Kind: problem.Invalid, Code: "invalid_page_token", Field: "page_token", Detail: "page_token is not one this API gave"}
	}
	return true, nil
}

// --- handlers

func (a *API) openAPI(*call) (any, int, error) { return openAPIDocument(), http.StatusOK, nil }

func (a *API) listDevices(c *call) (any, int, error) {
	limit, err := limitParam(c)
	if err != nil {
		return nil, 0, err
	}
	var after string
	if _, err := readPageToken(c, &after); err != nil {
		return nil, 0, err
	}
	ds, err := a.cfg.Store.ListDevices(c.ctx, cloudstore.DeviceFilter{Product: c.r.URL.Query().Get("product"), After: after, Limit: limit})
	if err != nil {
		return nil, 0, err
	}
	out := client.Page[client.CloudDevice]{Items: make([]client.CloudDevice, 0, len(ds))}
	for _, d := range ds {
		out.Items = append(out.Items, client.CloudDevice{ID: d.ID, Product: d.Product, FirstSeen: d.FirstSeen, LastSeen: d.LastSeen, CertNotAfter: d.CertNotAfter})
	}
	if len(ds) == limit {
		out.NextPageToken = pageToken(ds[len(ds)-1].ID)
	}
	return out, http.StatusOK, nil
}

type readingPage struct {
	T time.Time `json:"t"`
	S uint64    `json:"s"`
	M string    `json:"m"`
}

func (a *API) listTelemetry(c *call) (any, int, error) {
	dev, err := deviceParam(c)
	if err != nil {
		return nil, 0, err
	}
	q := cloudstore.TelemetryQuery{Device: dev}
	if q.Since, err = timeParam(c, "since"); err != nil {
		return nil, 0, err
	}
	if q.Until, err = timeParam(c, "until"); err != nil {
		return nil, 0, err
	}
	if m := c.r.URL.Query().Get("metric"); m != "" {
		if !telemetry.ValidName(m) {
			return nil, 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_metric", Field: "metric", Detail: "metric must be a reading name (drying_temp)"}
		}
		q.Metrics = []string{m}
	}
	if q.Limit, err = limitParam(c); err != nil {
		return nil, 0, err
	}
	var after readingPage
	if ok, err := readPageToken(c, &after); err != nil {
		return nil, 0, err
	} else if ok {
		q.After = &cloudstore.Cursor{Time: after.T, Seq: after.S, Metric: after.M}
	}
	page, err := a.cfg.Store.Telemetry(c.ctx, q)
	if err != nil {
		return nil, 0, err
	}
	out := client.Page[client.Reading]{Items: make([]client.Reading, 0, len(page.Readings))}
	for _, r := range page.Readings {
		out.Items = append(out.Items, client.Reading{Time: r.Time, ReceivedAt: r.ReceivedAt, Cycle: r.Cycle, Phase: r.Phase, Metric: r.Metric, Value: r.Value, Unit: r.Unit})
	}
	if page.Next != nil {
		out.NextPageToken = pageToken(readingPage{T: page.Next.Time, S: page.Next.Seq, M: page.Next.Metric})
	}
	return out, http.StatusOK, nil
}

func (a *API) listSummaries(c *call) (any, int, error) {
	dev, err := deviceParam(c)
	if err != nil {
		return nil, 0, err
	}
	since, err := timeParam(c, "since")
	if err != nil {
		return nil, 0, err
	}
	limit, err := limitParam(c)
	if err != nil {
		return nil, 0, err
	}
	var ss []cloudstore.Summary
	per := c.r.URL.Query().Get("per")
	switch per {
	case "cycle", "":
		per = "cycle"
		ss, err = a.cfg.Store.CycleSummaries(c.ctx, dev, since, limit)
	case "hour":
		ss, err = a.cfg.Store.HourlySummaries(c.ctx, dev, since, limit)
	default:
		return nil, 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_per", Field: "per", Detail: "per must be cycle or hour"}
	}
	if err != nil {
		return nil, 0, err
	}
	out := client.Page[client.Summary]{Items: make([]client.Summary, 0, len(ss))}
	for _, s := range ss {
		out.Items = append(out.Items, summary(per, s))
	}
	return out, http.StatusOK, nil
}

func (a *API) listEvents(c *call) (any, int, error) {
	dev, err := deviceParam(c)
	if err != nil {
		return nil, 0, err
	}
	since, err := timeParam(c, "since")
	if err != nil {
		return nil, 0, err
	}
	until, err := timeParam(c, "until")
	if err != nil {
		return nil, 0, err
	}
	limit, err := limitParam(c)
	if err != nil {
		return nil, 0, err
	}
	es, err := a.cfg.Store.Events(c.ctx, dev, since, until, nil, limit)
	if err != nil {
		return nil, 0, err
	}
	out := client.Page[client.CloudEvent]{Items: make([]client.CloudEvent, 0, len(es))}
	for _, e := range es {
		out.Items = append(out.Items, cloudEvent(e))
	}
	return out, http.StatusOK, nil
}

// diagnosticCreate is the body of runDiagnostic.
type diagnosticCreate struct {
	Command string          `json:"command"`
	Args    json.RawMessage `json:"args,omitempty"`
	Timeout string          `json:"timeout,omitempty"`
}

func (d diagnosticCreate) Validate() error {
	var v problem.Validation
	if !telemetry.ValidCommand(d.Command) {
		v.Add("command", "invalid_command", "command must be 1 to 64 letters, digits, '_', '.', '/' or '-'")
	}
	if len(d.Args) > telemetry.MaxArgsBytes {
		v.Add("args", "args_too_large", "args may be at most %d bytes of JSON", telemetry.MaxArgsBytes)
	}
	if d.Timeout != "" {
		t, err := time.ParseDuration(d.Timeout)
		if err != nil || t < diag.MinTimeout || t > diag.MaxTimeout {
			v.Add("timeout", "invalid_timeout", "timeout must be a duration from %s to %s", diag.MinTimeout, diag.MaxTimeout)
		}
	}
	return v.Err()
}

func (a *API) runDiagnostic(c *call) (any, int, error) {
	dev, err := deviceParam(c)
	if err != nil {
		return nil, 0, err
	}
	body := c.body.(diagnosticCreate)
	if _, err := a.cfg.Store.GetDevice(c.ctx, dev); err != nil {
		return nil, 0, err // a device the cloud never saw: 404, nothing sent
	}
	var timeout time.Duration
	if body.Timeout != "" {
		timeout, _ = time.ParseDuration(body.Timeout) // validated
	}
	d, err := a.cfg.Diag.Run(c.ctx, diag.Request{Device: dev, Command: body.Command, Args: body.Args,
		RequestedBy: "user:" + requester(c.p), Timeout: timeout})
	if err != nil {
		return nil, 0, err
	}
	a.log.InfoContext(c.ctx, "diagnostics requested", "diagnostic", d.ID, "device", dev, "command", body.Command, "user", c.p.UserName)
	return diagnostic(d), http.StatusAccepted, nil
}

// requester names the caller within the store's alphabet for requested_by.
func requester(p operator.Principal) string {
	var b strings.Builder
	for _, r := range p.UserName {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("_.:@+-", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 100 {
			break
		}
	}
	if b.Len() == 0 {
		return p.UserID
	}
	return b.String()
}

func (a *API) listAlerts(c *call) (any, int, error) {
	qv := c.r.URL.Query()
	f := cloudstore.AlertFilter{State: qv.Get("state"), Device: qv.Get("device"), Product: qv.Get("product")}
	if f.State != "" && f.State != cloudstore.AlertOpen && f.State != cloudstore.AlertCleared {
		return nil, 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_state", Field: "state", Detail: "state must be open or cleared"}
	}
	var err error
	if f.Limit, err = limitParam(c); err != nil {
		return nil, 0, err
	}
	var before int64
	if _, err := readPageToken(c, &before); err != nil {
		return nil, 0, err
	}
	f.Before = before
	as, next, err := a.cfg.Store.ListAlerts(c.ctx, f)
	if err != nil {
		return nil, 0, err
	}
	out := client.Page[client.Alert]{Items: make([]client.Alert, 0, len(as))}
	for _, al := range as {
		out.Items = append(out.Items, alert(al, nil))
	}
	if next != 0 {
		out.NextPageToken = pageToken(next)
	}
	return out, http.StatusOK, nil
}

func (a *API) getAlert(c *call) (any, int, error) {
	id, err := strconv.ParseInt(c.r.PathValue("alert"), 10, 64)
	if err != nil || id <= 0 {
		return nil, 0, problem.New(problem.NotFound, "not_found", "no such alert")
	}
	al, err := a.cfg.Store.GetAlert(c.ctx, id)
	if err != nil {
		return nil, 0, err
	}
	ds, err := a.cfg.Store.ListDiagnostics(c.ctx, cloudstore.DiagnosticFilter{AlertID: id, Limit: 20})
	if err != nil {
		return nil, 0, err
	}
	return alert(al, ds), http.StatusOK, nil
}

type diagPage struct {
	Before time.Time `json:"b"`
}

func (a *API) listDiagnostics(c *call) (any, int, error) {
	f := cloudstore.DiagnosticFilter{Device: c.r.URL.Query().Get("device")}
	var err error
	if f.Limit, err = limitParam(c); err != nil {
		return nil, 0, err
	}
	var p diagPage
	if _, err := readPageToken(c, &p); err != nil {
		return nil, 0, err
	}
	f.Before = p.Before
	ds, err := a.cfg.Store.ListDiagnostics(c.ctx, f)
	if err != nil {
		return nil, 0, err
	}
	out := client.Page[client.Diagnostic]{Items: make([]client.Diagnostic, 0, len(ds))}
	for _, d := range ds {
		out.Items = append(out.Items, diagnostic(d))
	}
	if len(ds) == f.Limit {
		out.NextPageToken = pageToken(diagPage{Before: ds[len(ds)-1].RequestedAt})
	}
	return out, http.StatusOK, nil
}

func (a *API) getDiagnostic(c *call) (any, int, error) {
	id := c.r.PathValue("diagnostic")
	if len(id) > 64 || !telemetry.ValidRequestID(id) {
		return nil, 0, problem.New(problem.NotFound, "not_found", "no such diagnostic")
	}
	var wait time.Duration
	if s := c.r.URL.Query().Get("wait"); s != "" {
		w, err := time.ParseDuration(s)
		if err != nil || w < 0 || w > diag.MaxWait {
			return nil, 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_wait", Field: "wait", Detail: fmt.Sprintf("wait must be a duration from 0 to %s", diag.MaxWait)}
		}
		wait = w
	}
	d, err := a.cfg.Diag.Wait(c.ctx, id, wait)
	if err != nil {
		return nil, 0, err
	}
	return diagnostic(d), http.StatusOK, nil
}

// --- conversions to the public types

func summary(per string, s cloudstore.Summary) client.Summary {
	key := s.Cycle
	if per == "hour" {
		key = s.Hour.UTC().Format(time.RFC3339)
	}
	return client.Summary{Period: per, Key: key, Phase: s.Phase, Metric: s.Metric, Unit: s.Unit, Min: s.Min, Max: s.Max, Avg: s.Avg(), Count: s.Count, From: s.First, To: s.Last}
}

func cloudEvent(e cloudstore.StoredEvent) client.CloudEvent {
	out := client.CloudEvent{Time: e.Time, ReceivedAt: e.ReceivedAt, Name: e.Name, Cycle: e.Cycle, Message: e.Message}
	if len(e.Readings) > 0 {
		out.Readings = map[string]client.EventReading{}
		for k, r := range e.Readings {
			out.Readings[k] = client.EventReading{Value: r.Value, Unit: r.Unit}
		}
	}
	return out
}

func alert(a cloudstore.Alert, ds []cloudstore.Diagnostic) client.Alert {
	out := client.Alert{ID: strconv.FormatInt(a.ID, 10), Product: a.Product, Device: a.Device, Rule: a.Rule, Severity: a.Severity,
		State: a.State, OpenedAt: a.OpenedAt, Value: a.Value, Message: a.Message, Evidence: a.Evidence}
	if !a.ClearedAt.IsZero() {
		t := a.ClearedAt
		out.ClearedAt = &t
	}
	for _, d := range ds {
		out.Diagnostics = append(out.Diagnostics, diagnostic(d))
	}
	return out
}

func diagnostic(d cloudstore.Diagnostic) client.Diagnostic {
	out := client.Diagnostic{ID: d.ID, Device: d.Device, Command: d.Command, Args: d.Args, RequestedBy: d.RequestedBy,
		RequestedAt: d.RequestedAt, Deadline: d.Deadline, State: d.State, Result: d.Result, Error: d.Error}
	if out.State == cloudstore.DiagnosticSent {
		out.State = cloudstore.DiagnosticPending // to its caller, sent is still pending
	}
	if !d.FinishedAt.IsZero() {
		t := d.FinishedAt
		out.FinishedAt = &t
	}
	if d.AlertID != 0 {
		out.AlertID = strconv.FormatInt(d.AlertID, 10)
	}
	return out
}
