// Package mgmt serves moat's HTTP API under /api/v1 to two audiences, each on its own
// listener (Register): the management API for people and their tools (tenants, members and
// tokens, products and device groups, signing keys, the TUF repository and image uploads,
// devices, device CAs, deployments, error reports and the audit logs, plus the OpenAPI
// document), and the device API (attestation nonces and attestation, the device's own
// record, its update assignment and long-poll, TUF files and targets, error report uploads).
//
// Every route is declared once in the table in routes.go; the table drives the mux, the
// OpenAPI document and the tests that walk every route. The shared HTTP core
// (internal/api/httpapi) holds the route type, the authorization rules, body limits and
// decoding, request IDs, paging, ETags, the cap on unauthenticated requests and metrics;
// this package holds the table, the handlers and the wrapper that authenticates and
// authorizes each request:
//   - Default deny: a route without a rule, or without a body limit that fits its body,
//     does not start (httpapi.CheckRoutes).
//   - Bearer tokens authenticate management routes; tenant routes take the tenant from the
//     path, check the caller's role in it and reach data only through store.Tx.ForTenant.
//     A caller without a role in a tenant gets 404, never 403, for the tenant and
//     everything under it (rule 3; attacked by TestAPI_CrossTenantIsNotFound, which walks
//     every path parameter of every route).
//   - Device routes authenticate the client certificate from the device's tenant CA (or,
//     for the update routes, a recovery token) and take the tenant from it, never from the
//     path; attestation carries its proof in a body of at most fleet.MaxEvidenceBytes.
//   - Routes that need no credential are served at most Config.MaxUnauthenticatedRequests
//     at a time; four times as many more wait up to UnauthenticatedQueueWait for a slot,
//     then 503 with Retry-After (issue 10 defect 2; attacked by
//     TestAPI_CapsUnauthenticatedRequests and TestAPI_RejectsOversizedAttestation).
//   - Bodies are bounded, strictly decoded and validated before anything is stored (rule 5;
//     fuzzed by FuzzDecodeBody). Every change appends an audit event in the same
//     transaction.
//
// An API is safe for concurrent use; each request's call belongs to its goroutine.
package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/api/httpapi"
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

// MaxBodyBytes bounds a typed JSON request body whose route declares no limit.
const MaxBodyBytes = httpapi.DefaultMaxBodyBytes

// DefaultMaxUnauthenticatedRequests is the cap on unauthenticated requests served at once
// when Config leaves it 0.
const DefaultMaxUnauthenticatedRequests = 256

// UnauthenticatedQueueWait is how long a request past MaxUnauthenticatedRequests waits for
// a slot (with at most four times MaxUnauthenticatedRequests waiting) before it is answered
// 503: a reconnect storm's attestations queue for a moment instead of all but the first
// few hundred waiting out Retry-After while the server idles (httpapi.Limiter).
const UnauthenticatedQueueWait = time.Second

// API is the management API.
type API struct {
	store   store.Store
	log     *slog.Logger
	now     func() time.Time
	metrics *Metrics
	repo    *repo.Service
	fleet   *fleet.Service
	// unauth caps the requests served at once on routes that need no credential.
	unauth *httpapi.Limiter
	// authCache holds recently verified tokens (auth_cache.go); publishAuth tells the
	// other replicas of a change to them (Config.PublishAuthChange, may be nil).
	authCache   *authCache
	publishAuth Invalidator
	// readOne reads with one statement (readTenantOne).
	readOne func(context.Context, func(store.Tx) error) error
	// parking parks the device long-polls that wait (Config.Parking; may be nil).
	parking *httpapi.Parking
}

// Config holds the API's dependencies and limits. The dependencies are required.
type Config struct {
	Store   store.Store
	Logger  *slog.Logger
	Now     func() time.Time
	Metrics *Metrics
	Repo    *repo.Service
	Fleet   *fleet.Service
	// MaxUnauthenticatedRequests caps the requests served at once on routes that need no
	// credential (AuthNone, AuthDeviceProof: nonces and attestation); past it they are
	// answered 503 with Retry-After. 0 means DefaultMaxUnauthenticatedRequests.
	MaxUnauthenticatedRequests int
	// AuthCacheTTL is how long a verified token is trusted without reading the store again
	// (auth_cache.go): at most MaxAuthCacheTTL; 0 means DefaultAuthCacheTTL. A change on
	// this replica applies at once; one on another replica within this time, or at once
	// when PublishAuthChange carries it there.
	AuthCacheTTL time.Duration
	// AuthCacheEntries bounds the verified-token cache; 0 means DefaultAuthCacheEntries.
	AuthCacheEntries int
	// PublishAuthChange, when set, is told of every change to what tokens authenticate as,
	// after it committed, for the other replicas (see Invalidator and InvalidateAuth). nil:
	// a single replica, or replicas that accept AuthCacheTTL of staleness.
	PublishAuthChange Invalidator
	// Parking, when set, parks the device long-polls (POST /device/updates) that wait:
	// their connections are hijacked and held without a goroutine each until the answer,
	// then handed back through Parking's Listener, which the server must serve with an
	// http.Server configured as the device listener's. nil: a waiting request holds its
	// connection as any other.
	Parking *httpapi.Parking
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
	if cfg.MaxUnauthenticatedRequests < 0 {
		errs = append(errs, errors.New("mgmt: MaxUnauthenticatedRequests must not be negative"))
	}
	if cfg.AuthCacheTTL < 0 || cfg.AuthCacheTTL > MaxAuthCacheTTL {
		errs = append(errs, fmt.Errorf("mgmt: AuthCacheTTL must be from 0 to %v", MaxAuthCacheTTL))
	}
	if cfg.AuthCacheEntries < 0 {
		errs = append(errs, errors.New("mgmt: AuthCacheEntries must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := httpapi.CheckRoutes(Routes()); err != nil {
		return nil, err
	}
	n := cfg.MaxUnauthenticatedRequests
	if n == 0 {
		n = DefaultMaxUnauthenticatedRequests
	}
	ttl, entries := cfg.AuthCacheTTL, cfg.AuthCacheEntries
	if ttl == 0 {
		ttl = DefaultAuthCacheTTL
	}
	if entries == 0 {
		entries = DefaultAuthCacheEntries
	}
	return &API{store: cfg.Store, log: cfg.Logger, now: cfg.Now, metrics: cfg.Metrics, repo: cfg.Repo, fleet: cfg.Fleet,
		unauth: httpapi.NewQueuedLimiter(n, 4*n, UnauthenticatedQueueWait), authCache: newAuthCache(ttl, entries), publishAuth: cfg.PublishAuthChange,
		parking: cfg.Parking,
		readOne: store.OneRead(cfg.Store)}, nil
}

// Audience is who a route serves, and so which listener carries it.
type Audience = httpapi.Audience

// The audiences of this package's routes.
const (
	// Management: people and their tools (bearer tokens), on the management listener.
	Management = httpapi.Management
	// Devices: the device API (mutual TLS, or a proof in the body), on the device listener.
	Devices = httpapi.Devices
)

// standardMethods are the HTTP methods of RFC 9110 and PATCH: another one on a known path
// is answered like an unknown path.
var standardMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace}

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
	// plain-text 405. The fallback names each other method rather than none: a method-less
	// pattern for a literal path (.../deployments/rollback, POST) would conflict with a GET
	// of its wildcard sibling (.../deployments/{deployment}).
	for pattern, methods := range allowed {
		allow := strings.Join(methods, ", ")
		if slices.Contains(methods, http.MethodGet) {
			allow += ", HEAD"
		}
		notAllowed := func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			problem.Write(w, r, problem.New(problem.MethodNotAllowed, "method_not_allowed", "%s is not allowed here; use %s", r.Method, allow))
		}
		for _, m := range standardMethods {
			if !slices.Contains(methods, m) && (m != http.MethodHead || !slices.Contains(methods, http.MethodGet)) {
				mux.HandleFunc(m+" "+pattern, notAllowed)
			}
		}
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

	x  httpapi.Exchange      // the request as the core sees it
	rm *httpapi.RouteMetrics // the route's metrics
}

// RequestID returns the request ID of ctx, or "".
func RequestID(ctx context.Context) string { return httpapi.RequestID(ctx) }

// wrap serves one route: the shared core (request ID, body bound, access log, metrics)
// around this audience's authentication, authorization and handler.
func (a *API) wrap(rt Route) http.Handler {
	name := rt.Name()
	metrics := a.metrics.Route(name) // label lookups once per route, not per request
	limit := rt.BodyLimit()
	unauthenticated := rt.Auth.Unauthenticated()
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		c := &call{route: &rt, now: a.now().UTC(), x: httpapi.Begin(rw, r, limit), rm: metrics}
		x := &c.x
		c.w, c.r, c.requestID = x.W, x.R, x.ID
		ctx := c.r.Context()
		c.ctx = ctx
		w := c.w

		var err error
		if unauthenticated {
			// Anyone can open these: cap how many are served at once so that strangers
			// cannot hold the server's memory (issue 10 defect 2; attacked by
			// TestAPI_CapsUnauthenticatedRequests).
			var release func()
			if release, err = a.unauth.Acquire(ctx, w.Header()); err == nil {
				defer release()
			}
		}
		if err == nil {
			err = x.CheckLength()
		}
		if err == nil {
			err = a.serve(c)
		}
		if errors.Is(err, errParked) {
			return // answered later, through answerParked
		}
		a.done(c, err)
	})
}

// done answers err as a problem when it is not nil (the answer was written otherwise), and
// writes the request's access line and metrics.
func (a *API) done(c *call, err error) {
	if err != nil {
		c.x.Fail(a.log, c.route.Pattern, err)
	}
	var buf [2]slog.Attr // on the stack: the access line of a read allocates no attribute slice
	attrs := buf[:0]
	if c.principal != nil {
		attrs = append(attrs, slog.String("user_id", string(c.principal.User.ID)))
	}
	if c.tenant != "" {
		attrs = append(attrs, slog.String("tenant_id", string(c.tenant)))
	}
	c.x.DoneRoute(a.log, c.rm, attrs...)
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
		v, err := httpapi.ReadJSON(c.r, c.route.Request)
		if err != nil {
			return err
		}
		c.body = v
	}
	out, err := c.route.Handler(a, c)
	if err != nil {
		return err
	}
	return a.write(c, out)
}

// write answers a handler's out with the route's status (or the one the handler set).
func (a *API) write(c *call, out any) error {
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
	if v, ok := httpapi.VersionOf(out); ok {
		c.w.Header().Set("ETag", httpapi.ETag(v))
	}
	c.w.Header().Set("Content-Type", "application/json")
	c.w.WriteHeader(status)
	return json.NewEncoder(c.w).Encode(out)
}

// authenticate resolves the bearer token to a principal, or takes the principal an
// in-process caller put in the context (WithPrincipal). Every failure is the same
// Unauthenticated problem, so a caller learns nothing about which part was wrong.
func (a *API) authenticate(c *call) (*auth.Principal, error) {
	if p, ok := c.ctx.Value(principalKey{}).(*auth.Principal); ok && p != nil {
		return p, nil
	}
	h := c.r.Header.Get("Authorization")
	presented, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return nil, errUnauthenticated()
	}
	p, err := a.AuthenticateToken(c.ctx, strings.TrimSpace(presented))
	if errors.Is(err, ErrUnauthenticated) {
		a.log.WarnContext(c.ctx, "authentication refused", "request_id", c.requestID, "token_fingerprint", auth.Fingerprint(presented))
		return nil, errUnauthenticated()
	}
	if err != nil {
		return nil, problem.Wrap(fmt.Errorf("authenticate: %w", err))
	}
	return p, nil
}

// errUnauthenticated is the one answer to every failed authentication, made only on a
// failure: an authenticated read builds no problem.
func errUnauthenticated() error {
	return &problem.Error{Kind: problem.Unauthenticated, Code: "unauthenticated", Detail: "a valid bearer token is required (moat login)"}
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
	// Unreachable: httpapi.CheckRoutes refuses a table with an unknown rule. Fail closed anyway.
	return problem.New(problem.Forbidden, "no_authorization_rule", "route has no authorization rule")
}

// Validator is a request body that checks itself.
type Validator = httpapi.Validator

// DecodeBody strictly decodes body into a new value of type t and validates it (see
// httpapi.DecodeBody).
func DecodeBody(body []byte, t reflect.Type) (any, error) { return httpapi.DecodeBody(body, t) }

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

// readTenantOne runs fn, a read of one statement, scoped to the call's tenant, without a
// transaction where the store can (store.OneRead): an object's GET. A second statement in fn
// fails; reads that must agree with each other use readTenant.
func (a *API) readTenantOne(c *call, fn func(store.TenantTx) error) error {
	return a.readOne(c.ctx, func(tx store.Tx) error {
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
