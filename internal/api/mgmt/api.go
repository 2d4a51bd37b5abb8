// Package mgmt serves the management REST API under /api/v1: tenants, members and tokens,
// products, device groups and the audit log, plus the OpenAPI document that describes them.
//
// Every route is declared once in the table in routes.go with its audience and authorization
// rule; the table drives the mux, the OpenAPI document and the tests that walk every route
// (default deny: a route without a rule does not start). Tenant-scoped routes take the tenant
// from the path, check the caller's role in it and reach data only through
// store.Tx.ForTenant. A caller without a role in a tenant gets 404, never 403, for the tenant
// and everything under it (rule 3; attacked by TestAPI_CrossTenantIsNotFound). Bodies are
// bounded, strictly decoded and validated before anything is stored (rule 5; fuzzed by
// FuzzDecodeBody). Every change appends an audit event in the same transaction.
//
// An API is safe for concurrent use.
package mgmt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

// API is the management API.
type API struct {
	store   store.Store
	log     *slog.Logger
	now     func() time.Time
	metrics *Metrics
	repo    *repo.Service
	fleet   *fleet.Service
}

// Config holds the API's dependencies. All are required.
type Config struct {
	Store   store.Store
	Logger  *slog.Logger
	Now     func() time.Time
	Metrics *Metrics
	Repo    *repo.Service
	Fleet   *fleet.Service
}

// New returns the API.
func New(cfg Config) (*API, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("mgmt: Store is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("mgmt: Logger is required"))
	}
	if cfg.Now == nil {
		errs = append(errs, errors.New("mgmt: Now is required"))
	}
	if cfg.Metrics == nil {
		errs = append(errs, errors.New("mgmt: Metrics is required"))
	}
	if cfg.Repo == nil {
		errs = append(errs, errors.New("mgmt: Repo is required"))
	}
	if cfg.Fleet == nil {
		errs = append(errs, errors.New("mgmt: Fleet is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := checkRoutes(Routes()); err != nil {
		return nil, err
	}
	return &API{store: cfg.Store, log: cfg.Logger, now: cfg.Now, metrics: cfg.Metrics, repo: cfg.Repo, fleet: cfg.Fleet}, nil
}

// Audience is who a route serves, and so which listener carries it.
type Audience int

const (
	// Management: people and their tools (bearer tokens), on the management listener.
	Management Audience = iota + 1
	// Devices: the device API (mutual TLS, or a proof in the body), on the device listener.
	Devices
)

// Audience returns the audience of a route, from its authorization rule.
func (rt Route) Audience() Audience {
	if rt.Auth == AuthDevice || rt.Auth == AuthDeviceProof {
		return Devices
	}
	return Management
}

// Register adds the routes of the given audiences (Management when none is given) to
// mux, with the OpenAPI document when Management is among them. The server gives each
// audience its own listener.
func (a *API) Register(mux *http.ServeMux, auds ...Audience) {
	if len(auds) == 0 {
		auds = []Audience{Management}
	}
	allowed := map[string][]string{}
	for _, rt := range Routes() {
		if !slices.Contains(auds, rt.Audience()) {
			continue
		}
		mux.Handle(rt.Method+" "+rt.Pattern, a.wrap(rt))
		allowed[rt.Pattern] = append(allowed[rt.Pattern], rt.Method)
	}
	// Another method on a known path is a problem document with Allow, not the mux's
	// plain-text 405.
	for pattern, methods := range allowed {
		allow := strings.Join(methods, ", ")
		if slices.Contains(methods, http.MethodGet) {
			allow += ", HEAD"
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			problem.Write(w, r, problem.New(problem.MethodNotAllowed, "method_not_allowed", "%s is not allowed here; use %s", r.Method, allow))
		})
	}
	if slices.Contains(auds, Management) {
		a.registerOpenAPI(mux)
	}
	// Anything else under the API is a problem document, not the mux's plain-text 404/405.
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, problem.New(problem.NotFound, "route_not_found", "no route %s %s", r.Method, r.URL.Path))
	})
}

func (a *API) registerOpenAPI(mux *http.ServeMux) {
	doc, err := json.MarshalIndent(OpenAPI(), "", "  ")
	if err != nil {
		panic(fmt.Sprintf("mgmt: OpenAPI document does not marshal: %v", err)) // impossible: built from static types
	}
	mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})
}

// call is the state of one request as handlers see it.
type call struct {
	ctx       context.Context
	w         http.ResponseWriter
	r         *http.Request
	route     *Route
	principal *auth.Principal
	device    *device.Device // the authenticated device on device routes
	tenant    tenant.ID      // set on tenant-scoped and device routes after authorization
	body      any            // decoded and validated request body, when the route has one
	requestID string
	now       time.Time
	status    int // success status, when a handler overrides the route's
}

// requestIDKey carries the request ID in the context (request-scoped, STYLE principle 2).
type requestIDKey struct{}

// RequestID returns the request ID of ctx, or "".
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey{}).(string)
	return s
}

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (deadlines for large transfers).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// The upload and target handlers extend their deadlines through the wrapper.
var _ interface{ Unwrap() http.ResponseWriter } = (*statusWriter)(nil)

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (a *API) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		reqID := newRequestID()
		ctx := context.WithValue(r.Context(), requestIDKey{}, reqID)
		r = r.WithContext(ctx)
		w := &statusWriter{ResponseWriter: rw}
		w.Header().Set("X-Request-Id", reqID)
		w.Header().Set("Cache-Control", "no-store")
		c := &call{ctx: ctx, w: w, r: r, route: &rt, requestID: reqID, now: a.now().UTC()}

		err := a.serve(c)
		if err != nil {
			p := problem.From(err)
			if p.Kind == problem.Internal {
				a.log.ErrorContext(ctx, "request failed", "request_id", reqID, "route", rt.Pattern, "err", p.Err)
			}
			problem.Write(w, r, p)
		}
		attrs := []any{
			"request_id", reqID, "method", r.Method, "route", rt.Pattern, "status", w.status,
			"duration_ms", float64(time.Since(start).Microseconds()) / 1000, "remote_addr", r.RemoteAddr,
		}
		if c.principal != nil {
			attrs = append(attrs, "user_id", c.principal.User.ID)
		}
		if c.tenant != "" {
			attrs = append(attrs, "tenant_id", c.tenant)
		}
		a.log.InfoContext(ctx, "http request", attrs...)
		a.metrics.observe(rt.Method+" "+rt.Pattern, w.status, time.Since(start))
	})
}

func (a *API) serve(c *call) error {
	switch c.route.Auth {
	case AuthNone, AuthDeviceProof:
	case AuthDevice:
		var d device.Device
		var err error
		if tok, ok := strings.CutPrefix(c.r.Header.Get("Authorization"), "Bearer "+fleet.RecoveryPrefix); ok && c.route.Recovery &&
			(c.r.TLS == nil || len(c.r.TLS.PeerCertificates) == 0) {
			d, err = a.fleet.AuthenticateRecovery(c.ctx, fleet.RecoveryPrefix+tok, c.route.Pattern)
		} else {
			d, err = a.fleet.Authenticate(c.ctx, c.r.TLS)
		}
		if errors.Is(err, fleet.ErrUnauthenticated) {
			a.log.WarnContext(c.ctx, "device authentication refused", "request_id", c.requestID, "err", err)
			return problem.New(problem.Unauthenticated, "device_unauthenticated", "a valid, unexpired device certificate from the device's tenant CA is required (attest first)")
		}
		if err != nil {
			return problem.Wrap(fmt.Errorf("authenticate device: %w", err))
		}
		c.device, c.tenant = &d, d.TenantID
	default:
		p, err := a.authenticate(c)
		if err != nil {
			c.w.Header().Set("WWW-Authenticate", `Bearer realm="moat"`)
			return err
		}
		c.principal = p
	}
	if err := a.authorize(c); err != nil {
		return err
	}
	if c.route.Request != nil {
		limit := c.route.MaxBodyBytes
		if limit == 0 {
			limit = MaxBodyBytes
		}
		v, err := decodeBody(c.r, c.w, c.route.Request, limit)
		if err != nil {
			return err
		}
		c.body = v
	}
	out, err := c.route.Handler(a, c)
	if err != nil {
		return err
	}
	status := c.route.Status
	if c.status != 0 {
		status = c.status
	}
	if out == nil {
		c.w.WriteHeader(status)
		return nil
	}
	if _, ok := out.(alreadyWritten); ok {
		return nil
	}
	if f, ok := out.(rawFile); ok {
		c.w.Header().Set("Content-Type", f.contentType)
		c.w.WriteHeader(status)
		_, err := c.w.Write(f.data)
		return err
	}
	if raw, ok := out.(rawJSON); ok {
		c.w.Header().Set("Content-Type", "application/json")
		c.w.WriteHeader(status)
		_, err := c.w.Write(raw)
		return err
	}
	if v, ok := versionOf(out); ok {
		c.w.Header().Set("ETag", etag(v))
	}
	c.w.Header().Set("Content-Type", "application/json")
	c.w.WriteHeader(status)
	return json.NewEncoder(c.w).Encode(out)
}

// authenticate resolves the bearer token to a principal. Every failure is the same
// Unauthenticated problem, so a caller learns nothing about which part was wrong.
func (a *API) authenticate(c *call) (*auth.Principal, error) {
	unauth := problem.New(problem.Unauthenticated, "unauthenticated", "a valid bearer token is required (moat login)")
	h := c.r.Header.Get("Authorization")
	presented, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return nil, unauth
	}
	id, secret, err := auth.ParseToken(strings.TrimSpace(presented))
	if err != nil {
		return nil, unauth
	}
	var p *auth.Principal
	err = a.store.InReadTx(c.ctx, func(tx store.Tx) error {
		tok, err := tx.Tokens().Get(c.ctx, id)
		if err != nil {
			return err
		}
		if !tok.Matches(secret) || !tok.Active(c.now) {
			return store.ErrNotFound
		}
		u, err := tx.Users().Get(c.ctx, tok.UserID)
		if err != nil {
			return err
		}
		roles, err := tx.Users().Roles(c.ctx, u.ID)
		if err != nil {
			return err
		}
		p = &auth.Principal{User: u, TokenID: tok.ID, Roles: roles}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		a.log.WarnContext(c.ctx, "authentication refused", "request_id", c.requestID, "token_fingerprint", auth.Fingerprint(presented))
		return nil, unauth
	}
	if err != nil {
		return nil, problem.Wrap(fmt.Errorf("authenticate: %w", err))
	}
	return p, nil
}

func (a *API) authorize(c *call) error {
	switch c.route.Auth {
	case AuthNone, AuthAny, AuthDevice, AuthDeviceProof:
		return nil
	case AuthOperator:
		return c.principal.RequireOperator()
	case AuthTenant:
		t := tenant.ID(c.r.PathValue("tenant"))
		if !ident.Valid(tenant.IDPrefix, string(t)) {
			return problem.New(problem.NotFound, "tenant_not_found", "no tenant %s", t)
		}
		if err := c.principal.Require(t, c.route.MinRole); err != nil {
			return err
		}
		c.tenant = t
		return nil
	}
	// Unreachable: checkRoutes refuses a table with an unknown rule. Fail closed anyway.
	return problem.New(problem.Forbidden, "no_authorization_rule", "route has no authorization rule")
}

// decodeBody reads a JSON body of at most limit bytes into a new value of type t and
// validates it.
func decodeBody(r *http.Request, w http.ResponseWriter, t reflect.Type, limit int64) (any, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && mt != "application/merge-patch+json") {
		return nil, problem.New(problem.Unsupported, "unsupported_media_type", "the body must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, problem.New(problem.TooLarge, "body_too_large", "the body must be at most %d bytes", limit)
		}
		return nil, problem.New(problem.Invalid, "body_unreadable", "the body could not be read")
	}
	return DecodeBody(body, t)
}

// Validator is a request body that checks itself.
type Validator interface{ Validate() error }

// DecodeBody strictly decodes body into a new value of type t and validates it: valid UTF-8,
// one JSON object, no unknown fields, no trailing data, right types, then Validate. Every
// failure is an Invalid problem naming the field where it can.
func DecodeBody(body []byte, t reflect.Type) (any, error) {
	if !utf8.Valid(body) {
		return nil, problem.New(problem.Invalid, "invalid_utf8", "the body is not valid UTF-8")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, problem.New(problem.Invalid, "body_required", "a JSON object body is required")
	}
	ptr := reflect.New(t)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(ptr.Interface()); err != nil {
		return nil, jsonProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, problem.New(problem.Invalid, "trailing_data", "the body must hold exactly one JSON object")
	}
	v := ptr.Elem().Interface()
	if val, ok := v.(Validator); ok {
		if err := val.Validate(); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func jsonProblem(err error) error {
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := e.Field
		return &problem.Error{Kind: problem.Invalid, Code: "wrong_type", Field: field,
			Detail: fmt.Sprintf("%s must be a JSON %s, not %s", fieldName(field), jsonKind(e.Type), e.Value)}
	}
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		return problem.New(problem.Invalid, "malformed_json", "the body is not valid JSON (at byte %d)", e.Offset)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field ") {
		// encoding/json has no typed error for unknown fields; the field name is all we take.
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &problem.Error{Kind: problem.Invalid, Code: "unknown_field", Field: name,
			Detail: fmt.Sprintf("unknown field %q", name)}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return problem.New(problem.Invalid, "malformed_json", "the body is truncated JSON")
	}
	return problem.New(problem.Invalid, "malformed_json", "the body is not a valid JSON object")
}

func fieldName(f string) string {
	if f == "" {
		return "the body"
	}
	return f
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "array"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "object"
}

// audit appends an event for a change, in the same transaction as the change.
func (c *call) audit(tt store.TenantTx, action, objType, objID, detail string) error {
	e := audit.Event{
		ID:         ident.New(audit.IDPrefix, c.now),
		TenantID:   tt.ID(),
		At:         c.now,
		Action:     action,
		ObjectType: objType,
		ObjectID:   objID,
		RemoteAddr: c.r.RemoteAddr,
		RequestID:  c.requestID,
		Detail:     detail,
	}
	if c.principal != nil {
		e.ActorID, e.ActorName, e.TokenID = string(c.principal.User.ID), c.principal.User.Name, string(c.principal.TokenID)
	}
	if err := tt.Audit().Append(c.ctx, e); err != nil {
		return fmt.Errorf("append audit event %s: %w", action, err)
	}
	return nil
}

// auditPlatform appends a platform-level event (no tenant), in the same transaction as the
// change.
func (c *call) auditPlatform(tx store.Tx, action, objType, objID, detail string) error {
	e := audit.Event{
		ID: ident.New(audit.IDPrefix, c.now), At: c.now, Action: action, ObjectType: objType, ObjectID: objID,
		RemoteAddr: c.r.RemoteAddr, RequestID: c.requestID, Detail: detail,
	}
	if c.principal != nil {
		e.ActorID, e.ActorName, e.TokenID = string(c.principal.User.ID), c.principal.User.Name, string(c.principal.TokenID)
	}
	if err := tx.PlatformAudit().Append(c.ctx, e); err != nil {
		return fmt.Errorf("append platform audit event %s: %w", action, err)
	}
	return nil
}

// inTenant runs fn in a transaction scoped to the call's tenant.
func (a *API) inTenant(c *call, fn func(store.TenantTx) error) error {
	return a.store.InTx(c.ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(c.tenant)
		if err != nil {
			return err
		}
		return fn(tt)
	})
}

// readTenant runs fn in a read-only transaction scoped to the call's tenant.
func (a *API) readTenant(c *call, fn func(store.TenantTx) error) error {
	return a.store.InReadTx(c.ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(c.tenant)
		if err != nil {
			return err
		}
		return fn(tt)
	})
}
