// Package operator authenticates the tenant's staff to `moat cloud`: they present the API
// token they use with the security service (`moat login`), and the cloud asks the security
// service who that is (GET /api/v1/me) and which role the user holds in the cloud's tenant.
// The cloud holds no user database of its own, so removing a member or revoking a token in
// the security service ends their access to the cloud too, after at most CacheTTL.
//
// What it enforces (DESIGN rule 3): only a member of the cloud's own tenant gets a
// Principal; a member of another tenant (platform operators included), a revoked
// or unknown token get ErrUnauthenticated (TestVerify_RefusesOtherTenantAndRevokedTokens).
// Roles are the security service's: Reader reads, Contributor and Administrator also run
// diagnostics.
//
// What it keeps: verified tokens only, by SHA-256, at most MaxCached for CacheTTL; a token
// that fails is never cached, so strangers cannot grow the cache (TestVerify_CacheIsBounded).
// Concurrent checks of one token share one request to the security service. Safe for
// concurrent use.
package operator

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/moat-iot/moat/client"
)

// Defaults.
const (
	CacheTTL  = 30 * time.Second
	MaxCached = 4096
)

// Errors.
var (
	// ErrUnauthenticated: no token, or one the security service does not accept for a
	// member of the cloud's tenant.
	ErrUnauthenticated = errors.New("not a valid token of a member of this tenant")
	// ErrUnavailable: the security service could not be asked.
	ErrUnavailable = errors.New("the security service cannot be reached to check the token")
)

// Role is a member's role in the tenant, as the security service names it.
type Role = client.Role

// Principal is an authenticated member of the cloud's tenant.
type Principal struct {
	UserID, UserName string
	Role             Role
}

// CanOperate reports whether p may send commands to devices (diagnostics).
func (p Principal) CanOperate() bool {
	return p.Role == client.RoleContributor || p.Role == client.RoleAdministrator
}

// Config configures a Verifier.
type Config struct {
	// Server is the security service's management URL, https://HOST:PORT.
	Server string
	// HTTPClient reaches it (trusting its CA); nil uses one that trusts the system roots.
	HTTPClient *http.Client
	// Tenant is the cloud's tenant ID.
	Tenant string
	Now    func() time.Time
	// TTL and Max bound the cache; zero means CacheTTL and MaxCached.
	TTL time.Duration
	Max int
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	if !strings.HasPrefix(c.Server, "https://") {
		errs = append(errs, errors.New("server: must be the security service's https:// URL"))
	}
	if c.Tenant == "" {
		errs = append(errs, errors.New("tenant: required"))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("now: required"))
	}
	if c.TTL < 0 || c.Max < 0 {
		errs = append(errs, errors.New("ttl and max must not be negative"))
	}
	return errors.Join(errs...)
}

// Verifier checks tokens against the security service.
type Verifier struct {
	cfg Config
	hc  *http.Client

	mu     sync.Mutex
	cache  map[[32]byte]entry
	flight map[[32]byte]*call
}

type entry struct {
	p       Principal
	expires time.Time
}

type call struct {
	done chan struct{}
	p    Principal
	err  error
}

// New returns a Verifier.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("operator verifier: %w", err)
	}
	if cfg.TTL == 0 {
		cfg.TTL = CacheTTL
	}
	if cfg.Max == 0 {
		cfg.Max = MaxCached
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Verifier{cfg: cfg, hc: hc, cache: map[[32]byte]entry{}, flight: map[[32]byte]*call{}}, nil
}

// Verify returns the member token belongs to, or ErrUnauthenticated, or ErrUnavailable.
func (v *Verifier) Verify(ctx context.Context, token string) (Principal, error) {
	if token == "" || len(token) > 512 || strings.ContainsAny(token, " \t\r\n") {
		return Principal{}, ErrUnauthenticated
	}
	key := sha256.Sum256([]byte(token))
	now := v.cfg.Now()
	v.mu.Lock()
	if e, ok := v.cache[key]; ok {
		if now.Before(e.expires) {
			v.mu.Unlock()
			return e.p, nil
		}
		delete(v.cache, key)
	}
	c, ok := v.flight[key]
	if !ok {
		c = &call{done: make(chan struct{})}
		v.flight[key] = c
		go v.ask(key, token, c)
	}
	v.mu.Unlock()
	select {
	case <-c.done:
		return c.p, c.err
	case <-ctx.Done():
		return Principal{}, context.Cause(ctx)
	}
}

// ask asks the security service once for all concurrent callers of one token. It runs
// without the caller's context, so that one caller giving up does not fail the others;
// the HTTP client's timeout bounds it.
func (v *Verifier) ask(key [32]byte, token string, c *call) {
	c.p, c.err = v.askServer(token)
	v.mu.Lock()
	delete(v.flight, key)
	if c.err == nil {
		if len(v.cache) >= v.cfg.Max {
			v.evictLocked()
		}
		v.cache[key] = entry{p: c.p, expires: v.cfg.Now().Add(v.cfg.TTL)}
	}
	v.mu.Unlock()
	close(c.done)
}

// evictLocked drops expired entries, and when none has expired, an arbitrary half: a full
// cache of live tokens costs a re-check, never memory.
func (v *Verifier) evictLocked() {
	now := v.cfg.Now()
	for k, e := range v.cache {
		if !now.Before(e.expires) {
			delete(v.cache, k)
		}
	}
	for k := range v.cache {
		if len(v.cache) < v.cfg.Max/2 {
			break
		}
		delete(v.cache, k)
	}
}

func (v *Verifier) askServer(token string) (Principal, error) {
	cl, err := client.New(v.cfg.Server, client.WithHTTPClient(v.hc), client.WithToken(token))
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	me, err := cl.GetMe(ctx)
	if err != nil {
		if ae, ok := errors.AsType[*client.Error](err); ok && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden) {
			return Principal{}, ErrUnauthenticated
		}
		return Principal{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for _, r := range me.Roles {
		if r.TenantID == v.cfg.Tenant {
			return Principal{UserID: me.User.ID, UserName: me.User.Name, Role: r.Role}, nil
		}
	}
	return Principal{}, ErrUnauthenticated
}

// Forget drops every cached token, so the next use of each asks the security service.
func (v *Verifier) Forget() {
	v.mu.Lock()
	clear(v.cache)
	v.mu.Unlock()
}

// Len is the number of cached tokens.
func (v *Verifier) Len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.cache)
}
