package mgmt_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

// The verified-token cache (auth_cache.go) must never let through what the store would
// refuse: each test warms the cache with a few requests, changes what the token
// authenticates as, and expects the very next request to see the change.

// authWorld is one tenant with an administrator, on a fresh server.
type authWorld struct {
	srv    *testenv.Server
	op     *api
	admin  *api
	tenant string
}

func newAuthWorld(t *testing.T, opts ...testenv.ServerOption) *authWorld {
	t.Helper()
	srv := testenv.StartServer(t, opts...)
	op := newAPI(t, srv, srv.OperatorToken)
	var ten object
	op.must(201, "POST", "/api/v1/tenants", map[string]string{"name": "Contoso"}).decode(t, &ten)
	w := &authWorld{srv: srv, op: op, tenant: ten.ID}
	w.admin, _ = w.member(t, "admin", "Administrator")
	return w
}

// member creates a member with role and returns its caller and user ID.
func (w *authWorld) member(t *testing.T, name, role string) (*api, string) {
	t.Helper()
	var mc struct {
		Member struct {
			User struct{ ID string } `json:"user"`
		} `json:"member"`
		Secret string `json:"secret"`
	}
	w.op.must(201, "POST", "/api/v1/tenants/"+w.tenant+"/members", map[string]string{"name": name, "role": role}).decode(t, &mc)
	return w.op.as(mc.Secret), mc.Member.User.ID
}

func (w *authWorld) products() string { return "/api/v1/tenants/" + w.tenant + "/products" }

// warm sends a few reads, so that the caller's token is in the cache.
func warm(c *api, path string) {
	for range 3 {
		c.must(200, "GET", path, nil)
	}
}

func TestAuth_RevokedTokenStopsAtOnce(t *testing.T) {
	t.Parallel()
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			var opts []testenv.ServerOption
			if store == "postgres" {
				opts = append(opts, testenv.WithDatabase(testenv.FreshPostgresDatabase(t)))
			}
			w := newAuthWorld(t, opts...)
			var created struct {
				Token  object `json:"token"`
				Secret string `json:"secret"`
			}
			w.admin.must(201, "POST", "/api/v1/tokens", map[string]string{"name": "ci"}).decode(t, &created)
			ci := w.admin.as(created.Secret)
			warm(ci, "/api/v1/me")
			warm(ci, w.products())

			w.admin.must(200, "DELETE", "/api/v1/tokens/"+created.Token.ID, nil)
			if p := ci.must(401, "GET", "/api/v1/me", nil).problem(t); p.Code != "unauthenticated" {
				t.Errorf("revoked token: code = %q, want unauthenticated", p.Code)
			}
			ci.must(401, "GET", w.products(), nil)
			// The revoking token itself is untouched.
			w.admin.must(200, "GET", "/api/v1/me", nil)

			// A token that revokes itself is refused from its next request.
			ci2, id := newToken(t, w.admin)
			warm(ci2, "/api/v1/me")
			ci2.must(200, "DELETE", "/api/v1/tokens/"+id, nil)
			ci2.must(401, "GET", "/api/v1/me", nil)
		})
	}
}

func newToken(t *testing.T, c *api) (*api, string) {
	t.Helper()
	var created struct {
		Token  object `json:"token"`
		Secret string `json:"secret"`
	}
	c.must(201, "POST", "/api/v1/tokens", map[string]string{"name": "extra"}).decode(t, &created)
	return c.as(created.Secret), created.Token.ID
}

func TestAuth_RemovedMemberStopsAtOnce(t *testing.T) {
	t.Parallel()
	w := newAuthWorld(t)
	bob, bobID := w.member(t, "bob", "Contributor")
	warm(bob, w.products())

	w.admin.must(204, "DELETE", "/api/v1/tenants/"+w.tenant+"/members/"+bobID, nil)
	// The tenant is invisible to a non-member: 404, never 403 (rule 3).
	bob.must(404, "GET", w.products(), nil)
	bob.must(404, "POST", w.products(), map[string]string{"name": "X1"})
	// Bob still authenticates: his token was not revoked, only his role removed.
	bob.must(200, "GET", "/api/v1/me", nil)
}

func TestAuth_RoleChangeAppliesAtOnce(t *testing.T) {
	t.Parallel()
	w := newAuthWorld(t)
	bob, bobID := w.member(t, "bob", "Contributor")
	member := "/api/v1/tenants/" + w.tenant + "/members/" + bobID
	bob.must(201, "POST", w.products(), map[string]string{"name": "X1"})
	warm(bob, w.products())

	// Lowered: the next write is refused.
	w.admin.must(200, "PUT", member, map[string]string{"role": "Reader"})
	if p := bob.must(403, "POST", w.products(), map[string]string{"name": "X2"}).problem(t); p.Code != "role_required" {
		t.Errorf("after demotion: code = %q, want role_required", p.Code)
	}
	// Raised: the next write is allowed.
	w.admin.must(200, "PUT", member, map[string]string{"role": "Contributor"})
	bob.must(201, "POST", w.products(), map[string]string{"name": "X3"})

	// A tenant's creator holds its role from the next request on.
	warm(w.op, "/api/v1/me")
	var ten object
	w.op.must(201, "POST", "/api/v1/tenants", map[string]string{"name": "Fabrikam"}).decode(t, &ten)
	w.op.must(200, "GET", "/api/v1/tenants/"+ten.ID+"/products", nil)
}

func TestAuth_WrongSecretNeverServedFromCache(t *testing.T) {
	t.Parallel()
	w := newAuthWorld(t)
	warm(w.admin, w.products())

	// The admin's token ID with other secrets of the right shape: refused, the cache warm
	// with the right one notwithstanding.
	id, secret, _ := strings.Cut(strings.TrimPrefix(w.admin.token, "moat_"), ".")
	last := "A"
	if strings.HasSuffix(secret, "A") {
		last = "B"
	}
	for _, wrong := range []string{strings.Repeat("A", len(secret)), secret[:len(secret)-1] + last} {
		if wrong == secret {
			t.Fatalf("test secret %q equals the real one", wrong)
		}
		r := w.admin.as("moat_"+id+"."+wrong).must(401, "GET", w.products(), nil)
		if p := r.problem(t); p.Code != "unauthenticated" {
			t.Errorf("wrong secret: code = %q, want unauthenticated", p.Code)
		}
	}
	// A refusal neither evicts nor poisons the entry.
	w.admin.must(200, "GET", w.products(), nil)
}

func TestAuth_ExpiredTokenRefusedFromCache(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	advance := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
	}
	w := newAuthWorld(t, testenv.WithConfig(func(c *server.Config) { c.Now = clock }))
	var created struct {
		Secret string `json:"secret"`
	}
	w.admin.must(201, "POST", "/api/v1/tokens", map[string]string{"name": "short", "expires_in": "1h"}).decode(t, &created)
	short := w.admin.as(created.Secret)

	advance(time.Hour - time.Second)
	warm(short, "/api/v1/me") // cached now, for longer than the token has left
	advance(2 * time.Second)
	short.must(401, "GET", "/api/v1/me", nil)
}
