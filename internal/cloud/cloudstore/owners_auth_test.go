package cloudstore_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/testenv"
)

func TestSQLite_OwnerAuth(t *testing.T) {
	t.Parallel()
	testOwnerAuth(t, openSQLite(t))
}

func TestPostgres_OwnerAuth(t *testing.T) {
	t.Parallel()
	testenv.PostgresDSN(t)
	testOwnerAuth(t, openPostgres(t))
}

func hash64(c byte) string { return strings.Repeat(string(c), 64) }

func newOwner(t *testing.T, s *cloudstore.Store, email string) cloudstore.Owner {
	t.Helper()
	o, err := s.CreateOwner(t.Context(), cloudstore.NewOwner{Email: email, Name: "Ann", PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", CreatedAt: t0})
	if err != nil {
		t.Fatalf("CreateOwner(%s) = %v", email, err)
	}
	return o
}

func testOwnerAuth(t *testing.T, s *cloudstore.Store) {
	t.Run("VerifyTokenWorksOnceAndExpires", func(t *testing.T) {
		ctx := t.Context()
		o := newOwner(t, s, "ann@example.com")
		mail := cloudstore.OutboxItem{Kind: "email", Key: "verify:1:aaaa", Payload: json.RawMessage(`{"to":"ann@example.com"}`)}
		tok := cloudstore.OwnerToken{Hash: hash64('1'), OwnerID: o.ID, Purpose: cloudstore.TokenVerify, CreatedAt: t0, ExpiresAt: t0.Add(48 * time.Hour)}
		if err := s.CreateOwnerToken(ctx, tok, mail); err != nil {
			t.Fatalf("CreateOwnerToken = %v", err)
		}
		if err := s.CreateOwnerToken(ctx, tok); !errors.Is(err, cloudstore.ErrConflict) {
			t.Errorf("CreateOwnerToken(same hash) = %v, want ErrConflict", err)
		}
		if n, err := s.CountOwnerTokens(ctx, o.ID, cloudstore.TokenVerify, t0); err != nil || n != 1 {
			t.Errorf("CountOwnerTokens = %d, %v; want 1", n, err)
		}
		got, err := s.VerifyOwner(ctx, tok.Hash, t0.Add(time.Hour))
		if err != nil || !got.VerifiedAt.Equal(t0.Add(time.Hour)) {
			t.Fatalf("VerifyOwner = %+v, %v; want verified at t0+1h", got, err)
		}
		if _, err := s.VerifyOwner(ctx, tok.Hash, t0.Add(2*time.Hour)); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("VerifyOwner(spent token) = %v, want ErrNotFound", err)
		}
		late := cloudstore.OwnerToken{Hash: hash64('2'), OwnerID: o.ID, Purpose: cloudstore.TokenVerify, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		if err := s.CreateOwnerToken(ctx, late); err != nil {
			t.Fatal(err)
		}
		if _, err := s.VerifyOwner(ctx, late.Hash, t0.Add(time.Hour)); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("VerifyOwner(expired token) = %v, want ErrNotFound", err)
		}
		if _, err := s.VerifyOwner(ctx, "not-a-hash", t0); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("VerifyOwner(malformed) = %v, want ErrNotFound", err)
		}
		if n, err := s.PruneOwnerAuth(ctx, t0.Add(49*time.Hour), t0); err != nil || n != 2 {
			t.Errorf("PruneOwnerAuth = %d, %v; want the 2 expired tokens", n, err)
		}
		bad := cloudstore.OwnerToken{Hash: "x", Purpose: "login"}
		if err := s.CreateOwnerToken(ctx, bad); !errors.Is(err, cloudstore.ErrInvalid) {
			t.Errorf("CreateOwnerToken(bad) = %v, want ErrInvalid", err)
		}
	})
	t.Run("SignInCounters", func(t *testing.T) {
		ctx := t.Context()
		o := newOwner(t, s, "bob@example.com")
		lock := func(n int) time.Time {
			if n >= 2 {
				return t0.Add(time.Duration(n) * time.Minute)
			}
			return time.Time{}
		}
		for want := 1; want <= 3; want++ {
			got, err := s.RecordSignInFailure(ctx, o.ID, lock)
			if err != nil || got.FailedSignIns != want || !got.LockedUntil.Equal(lock(want)) {
				t.Errorf("RecordSignInFailure #%d = %d locked %v, %v; want %d locked %v", want, got.FailedSignIns, got.LockedUntil, err, want, lock(want))
			}
		}
		if err := s.RecordSignIn(ctx, o.ID); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetOwner(ctx, o.ID); got.FailedSignIns != 0 || !got.LockedUntil.IsZero() {
			t.Errorf("after RecordSignIn: %d failures, locked until %v; want cleared", got.FailedSignIns, got.LockedUntil)
		}
		if _, err := s.RecordSignInFailure(ctx, 1<<40, lock); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("RecordSignInFailure(unknown) = %v, want ErrNotFound", err)
		}
		if n, err := s.CountAppliances(ctx, o.ID); err != nil || n != 0 {
			t.Errorf("CountAppliances = %d, %v; want 0", n, err)
		}
	})
	t.Run("SessionsExpireIdleAndAbsolute", func(t *testing.T) {
		ctx := t.Context()
		o := newOwner(t, s, "cy@example.com")
		idle := 30 * time.Minute
		for i, c := range []byte{'a', 'b', 'c'} {
			err := s.CreatePortalSession(ctx, cloudstore.PortalSession{IDHash: hash64(c), OwnerID: o.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Duration(i+1) * time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
		}
		// a: used every 20 minutes it lives to its absolute end (1 h), then is gone.
		for _, m := range []int{20, 40} {
			if p, err := s.UsePortalSession(ctx, hash64('a'), t0.Add(time.Duration(m)*time.Minute), idle); err != nil || p.OwnerID != o.ID {
				t.Fatalf("UsePortalSession(a, +%dm) = %+v, %v", m, p, err)
			}
		}
		if _, err := s.UsePortalSession(ctx, hash64('a'), t0.Add(61*time.Minute), idle); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("UsePortalSession(a past absolute expiry) = %v, want ErrNotFound", err)
		}
		// b: idle for 30 minutes ends it, and it stays ended.
		if _, err := s.UsePortalSession(ctx, hash64('b'), t0.Add(idle), idle); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("UsePortalSession(b idle) = %v, want ErrNotFound", err)
		}
		if _, err := s.UsePortalSession(ctx, hash64('b'), t0.Add(time.Minute), idle); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("UsePortalSession(b after its idle end) = %v, want ErrNotFound (deleted)", err)
		}
		if err := s.DeletePortalSession(ctx, hash64('c')); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UsePortalSession(ctx, hash64('c'), t0, idle); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("UsePortalSession(deleted) = %v, want ErrNotFound", err)
		}
		if err := s.CreatePortalSession(ctx, cloudstore.PortalSession{IDHash: hash64('d'), OwnerID: o.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.PruneOwnerAuth(ctx, t0.Add(2*time.Hour), t0.Add(time.Hour)); err != nil || n < 1 {
			t.Errorf("PruneOwnerAuth = %d, %v; want the expired session", n, err)
		}
		if err := s.CreatePortalSession(ctx, cloudstore.PortalSession{IDHash: "short"}); !errors.Is(err, cloudstore.ErrInvalid) {
			t.Errorf("CreatePortalSession(bad) = %v, want ErrInvalid", err)
		}
	})
}
