package operator_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/cloud/operator"
	"github.com/moat-iot/moat/internal/testenv"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newVerifier(t *testing.T, p *testenv.Platform, clk *clock, max int) *operator.Verifier {
	t.Helper()
	v, err := operator.New(operator.Config{Server: p.Server.URL, HTTPClient: p.Server.HTTPClient(t), Tenant: p.Tenant, Now: clk.Now, Max: max})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestVerify_RefusesOtherTenantAndRevokedTokens attacks rule 3 at the cloud's door: a
// member of the cloud's tenant gets in with the role the security service gives; a member
// of another tenant, an unknown token and a revoked one (once the cache entry expires) do not.
func TestVerify_RefusesOtherTenantAndRevokedTokens(t *testing.T) {
	ctx := context.Background()
	p := testenv.NewPlatform(t)
	clk := &clock{now: time.Now()}
	v := newVerifier(t, p, clk, 0)

	reader, err := p.Admin.CreateMember(ctx, p.Tenant, client.MemberCreate{Name: "support", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	other, err := p.Op.CreateTenant(ctx, client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := p.Op.CreateMember(ctx, other.ID, client.MemberCreate{Name: "fabrikam-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}

	got, err := v.Verify(ctx, reader.Secret)
	if err != nil || got.Role != client.RoleReader || got.UserName != "support" || got.CanOperate() {
		t.Fatalf("reader: %+v, %v", got, err)
	}
	for name, tok := range map[string]string{
		"another tenant's administrator": stranger.Secret,
		"made-up token":                  "moat_aaaaaaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		"empty":                          "",
		"white space":                    "moat_x y",
	} {
		if p, err := v.Verify(ctx, tok); !errors.Is(err, operator.ErrUnauthenticated) {
			t.Errorf("%s: got %+v, %v; want ErrUnauthenticated", name, p, err)
		}
	}

	// Revocation reaches the cloud when the cached answer expires.
	rc := p.Client(reader.Secret)
	me, err := rc.GetMe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.RevokeToken(ctx, me.TokenID); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, reader.Secret); err != nil {
		t.Fatalf("within the cache's lifetime the answer stands: %v", err)
	}
	clk.Add(operator.CacheTTL)
	if _, err := v.Verify(ctx, reader.Secret); !errors.Is(err, operator.ErrUnauthenticated) {
		t.Fatalf("revoked token after the cache's lifetime: %v, want ErrUnauthenticated", err)
	}
}

// TestVerify_CacheIsBounded: failed tokens are never cached, and valid ones stay within
// the cap; concurrent checks of one token share one request.
func TestVerify_CacheIsBounded(t *testing.T) {
	ctx := context.Background()
	p := testenv.NewPlatform(t)
	clk := &clock{now: time.Now()}
	v := newVerifier(t, p, clk, 4)
	for i := range 50 {
		if _, err := v.Verify(ctx, fmt.Sprintf("moat_%026d.%043d", i, i)); !errors.Is(err, operator.ErrUnauthenticated) {
			t.Fatalf("made-up token %d: %v", i, err)
		}
	}
	if n := v.Len(); n != 0 {
		t.Fatalf("cache holds %d entries after 50 refused tokens, want 0", n)
	}
	var secrets []string
	for i := range 10 {
		m, err := p.Admin.CreateMember(ctx, p.Tenant, client.MemberCreate{Name: fmt.Sprintf("staff-%d", i), Role: client.RoleContributor})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, m.Secret)
	}
	for _, s := range secrets {
		got, err := v.Verify(ctx, s)
		if err != nil || !got.CanOperate() {
			t.Fatalf("contributor: %+v, %v", got, err)
		}
		if n := v.Len(); n > 4 {
			t.Fatalf("cache holds %d entries, cap 4", n)
		}
	}

	var wg sync.WaitGroup
	var failed atomic.Int32
	v.Forget()
	for range 20 {
		wg.Go(func() {
			if _, err := v.Verify(ctx, secrets[0]); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d concurrent checks of a valid token failed", failed.Load())
	}
}
