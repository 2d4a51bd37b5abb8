package server_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moat-iot/moat/client"
)

// authBound bounds how long a change to a token made through one replica may take to stop
// it on the other: far below the test's one-minute --auth-cache-ttl, so that only the
// NOTIFY path (replicas.go, handleAuthChanges) answers in time, never the TTL.
const authBound = 5 * time.Second

// TestReplicas_RevocationStopsTokenOnEveryReplica: replica B has verified a member's token
// (its cache is warm, for one minute); the token is revoked through replica A, and B refuses
// it (401) within authBound. The control shows that B's cache is warm: a second token,
// revoked in the database behind the replicas' backs (no notification), still works on B.
// Likewise an Administrator demoted to Reader through A is refused an Administrator's
// request on B (403) within authBound. Attacks the cross-replica invalidation of the
// token-check cache (internal/api/mgmt auth_cache.go): with handleAuthChanges doing
// nothing, B serves the revoked token until the TTL.
func TestReplicas_RevocationStopsTokenOnEveryReplica(t *testing.T) {
	t.Parallel()
	rp := StartReplicaPair(t, "--auth-cache-ttl", "1m")
	p, ctx, s := rp.P, t.Context(), &served{}

	m, err := p.Admin.CreateMember(ctx, p.Tenant, client.MemberCreate{Name: "reader", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	onA := MemberOn(t, rp.A, m.Secret, s)
	control, err := onA.CreateToken(ctx, client.TokenCreate{Name: "control"})
	if err != nil {
		t.Fatal(err)
	}
	onB, controlOnB := MemberOn(t, rp.B, m.Secret, s), MemberOn(t, rp.B, control.Secret, s)
	for _, c := range []*client.Client{onB, controlOnB} { // B verifies and caches both
		if _, err := c.GetMe(ctx); err != nil {
			t.Fatalf("GetMe on B: %v", err)
		}
	}

	// Control: a revocation no replica hears of leaves B's cached entry in place.
	revokeBehindTheBack(t, rp.DSN, control.Token.ID)
	if _, err := controlOnB.GetMe(ctx); err != nil {
		t.Fatalf("GetMe on B with a token revoked behind its back = %v, want it served from B's cache (else the test proves nothing)", err)
	}

	// The member revokes its token through A; B stops it at once.
	if _, err := onA.RevokeToken(ctx, m.Token.ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	if took := waitForStatus(t, authBound, http.StatusUnauthorized, func() error { _, err := onB.GetMe(ctx); return err }); took >= 0 {
		t.Logf("revoked token refused on B %s after its revocation through A", took.Round(time.Millisecond))
	} else {
		t.Fatalf("the token revoked through A was still served by B %s later (no cross-replica invalidation; TTL 1m)", time.Since(revoked).Round(time.Millisecond))
	}

	// Role demotion: an Administrator made Reader through A loses the role on B at once.
	a, err := p.Admin.CreateMember(ctx, p.Tenant, client.MemberCreate{Name: "admin-2", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	adminOnB := MemberOn(t, rp.B, a.Secret, s)
	listMembers := func() error { _, err := adminOnB.ListMembers(ctx, p.Tenant, client.ListOptions{}); return err }
	if err := listMembers(); err != nil {
		t.Fatalf("ListMembers on B as Administrator: %v", err)
	}
	if _, err := p.Admin.PutMember(ctx, p.Tenant, a.Member.User.ID, client.RoleReader); err != nil {
		t.Fatal(err)
	}
	demoted := time.Now()
	if took := waitForStatus(t, authBound, http.StatusForbidden, listMembers); took >= 0 {
		t.Logf("demotion through A applied on B %s after it", took.Round(time.Millisecond))
	} else {
		t.Fatalf("the member demoted through A still listed members on B %s later (no cross-replica invalidation; TTL 1m)", time.Since(demoted).Round(time.Millisecond))
	}
	if got := rp.B.Metric(t, `moat_notify_received_total{result="handled"}`); got < 2 {
		t.Errorf("B handled %v notifications, want at least the revocation and the demotion", got)
	}
	s.check(t)
}

// waitForStatus calls req until it fails with status, for at most bound; it returns how
// long that took, or -1 when req still did not fail so at the deadline. Any other failure
// ends the test.
func waitForStatus(t *testing.T, bound time.Duration, status int, req func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := req()
		if ce, ok := errors.AsType[*client.Error](err); ok && ce.Status == status {
			return time.Since(start)
		} else if err != nil {
			t.Fatalf("want status %d or success, got %v", status, err)
		}
		if time.Since(start) > bound {
			return -1
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not timing an assertion
	}
}

// revokeBehindTheBack marks a token revoked in the database directly, as no replica would:
// no replica clears its cache or tells the others.
func revokeBehindTheBack(t *testing.T, dsn, tokenID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tag, err := conn.Exec(ctx, `UPDATE tokens SET revoked_at = now() WHERE id = $1`, tokenID)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("revoke token %s in the database: %v, %d rows", tokenID, err, tag.RowsAffected())
	}
}
