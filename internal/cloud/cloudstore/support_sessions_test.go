package cloudstore_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/testenv"
)

func TestSQLite_SupportSessions(t *testing.T) {
	t.Parallel()
	testSupportSessions(t, openSQLite(t))
}

func TestPostgres_SupportSessions(t *testing.T) {
	t.Parallel()
	testenv.PostgresDSN(t)
	testSupportSessions(t, openPostgres(t))
}

// testSupportSessions: a session is found by its hash until it is idle for the idle
// period or past its absolute expiry, however often it is used; then it is gone.
func testSupportSessions(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	const idle = 30 * time.Minute
	h1, h2, h3 := strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64)
	mk := func(h string) cloudstore.SupportSession {
		return cloudstore.SupportSession{IDHash: h, UserID: "usr_1", UserName: "support <b>", Role: "Reader", TokenSealed: "sealed",
			CreatedAt: t0, ExpiresAt: t0.Add(12 * time.Hour)}
	}
	for _, h := range []string{h1, h2, h3} {
		if err := s.CreateSupportSession(ctx, mk(h)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateSupportSession(ctx, mk(h1)); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("second session with one hash = %v, want ErrConflict", err)
	}
	bad := mk(strings.Repeat("4", 64))
	bad.IDHash, bad.TokenSealed, bad.ExpiresAt = "not-a-hash", strings.Repeat("x", 5000), t0
	if err := s.CreateSupportSession(ctx, bad); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("malformed session = %v, want ErrInvalid", err)
	}
	// Used every 20 minutes, the session lives to its absolute expiry and no further.
	at := t0
	for at.Before(t0.Add(12*time.Hour - 20*time.Minute)) {
		at = at.Add(20 * time.Minute)
		got, err := s.UseSupportSession(ctx, h1, at, idle)
		if err != nil {
			t.Fatalf("use at %s = %v", at.Sub(t0), err)
		}
		if got.UserName != "support <b>" || got.TokenSealed != "sealed" || !got.LastUsedAt.Equal(at) {
			t.Fatalf("use = %+v", got)
		}
	}
	if _, err := s.UseSupportSession(ctx, h1, t0.Add(12*time.Hour), idle); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("use at the absolute expiry = %v, want ErrNotFound", err)
	}
	if _, err := s.UseSupportSession(ctx, h1, t0.Add(time.Minute), idle); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("use after expiry deleted it = %v, want ErrNotFound", err)
	}
	// Idle for 30 minutes: gone.
	if _, err := s.UseSupportSession(ctx, h2, t0.Add(idle), idle); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("use after %s idle = %v, want ErrNotFound", idle, err)
	}
	if _, err := s.UseSupportSession(ctx, "nothex", t0, idle); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("use of a malformed hash = %v, want ErrNotFound", err)
	}
	if err := s.DeleteSupportSession(ctx, h3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseSupportSession(ctx, h3, t0.Add(time.Minute), idle); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("use after sign-out = %v, want ErrNotFound", err)
	}
	for _, h := range []string{h1, h2} {
		if err := s.CreateSupportSession(ctx, mk(h)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UseSupportSession(ctx, h1, t0.Add(25*time.Minute), idle); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteStaleSupportSessions(ctx, t0.Add(40*time.Minute), idle)
	if err != nil || n != 1 {
		t.Errorf("DeleteStaleSupportSessions = %d, %v; want 1 (the idle one)", n, err)
	}
	if _, err := s.UseSupportSession(ctx, h1, t0.Add(41*time.Minute), idle); err != nil {
		t.Errorf("the session in use after the sweep = %v", err)
	}
}
