package cloudstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/testenv"
)

func TestSQLite_OwnerReset(t *testing.T) {
	t.Parallel()
	testOwnerReset(t, openSQLite(t))
}

func TestPostgres_OwnerReset(t *testing.T) {
	t.Parallel()
	testenv.PostgresDSN(t)
	testOwnerReset(t, openPostgres(t))
}

const newPHC = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA"

func testOwnerReset(t *testing.T, s *cloudstore.Store) {
	t.Run("ResetWorksOnceEndsSessionsAndUnlocks", func(t *testing.T) {
		ctx := t.Context()
		o := newOwner(t, s, "reset-ann@example.com")
		other := newOwner(t, s, "reset-bob@example.com")
		lock := func(int) time.Time { return t0.Add(time.Hour) }
		for range 3 {
			if _, err := s.RecordSignInFailure(ctx, o.ID, lock); err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range []byte{'a', 'b'} {
			if err := s.CreatePortalSession(ctx, cloudstore.PortalSession{IDHash: hash64(c), OwnerID: o.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Duration(i+1) * time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CreatePortalSession(ctx, cloudstore.PortalSession{IDHash: hash64('c'), OwnerID: other.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []byte{'3', '4'} {
			tok := cloudstore.OwnerToken{Hash: hash64(c), OwnerID: o.ID, Purpose: cloudstore.TokenReset, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
			if err := s.CreateOwnerToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ResetOwnerPassword(ctx, hash64('3'), newPHC, t0.Add(time.Minute))
		if err != nil {
			t.Fatalf("ResetOwnerPassword = %v", err)
		}
		if got.ID != o.ID || got.PasswordHash != newPHC || got.FailedSignIns != 0 || !got.LockedUntil.IsZero() || !got.VerifiedAt.Equal(t0.Add(time.Minute)) {
			t.Errorf("owner after reset = %+v; want the new hash, no failures, no lock, verified at the reset", got)
		}
		for _, c := range []byte{'a', 'b'} {
			if _, err := s.UsePortalSession(ctx, hash64(c), t0.Add(2*time.Minute), time.Hour); !errors.Is(err, cloudstore.ErrNotFound) {
				t.Errorf("session %c of the owner after the reset = %v, want ErrNotFound (ended)", c, err)
			}
		}
		if _, err := s.UsePortalSession(ctx, hash64('c'), t0.Add(2*time.Minute), time.Hour); err != nil {
			t.Errorf("another owner's session after the reset = %v, want it untouched", err)
		}
		if _, err := s.ResetOwnerPassword(ctx, hash64('3'), "$argon2id$second", t0.Add(2*time.Minute)); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("ResetOwnerPassword(spent token) = %v, want ErrNotFound", err)
		}
		if _, err := s.ResetOwnerPassword(ctx, hash64('4'), "$argon2id$older-link", t0.Add(2*time.Minute)); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("ResetOwnerPassword(older link of the same owner) = %v, want ErrNotFound (spent by the reset)", err)
		}
		if g, _ := s.GetOwner(ctx, o.ID); g.PasswordHash != newPHC {
			t.Errorf("password hash = %q after refused resets, want unchanged", g.PasswordHash)
		}
	})
	t.Run("ExpiredAndWrongPurposeRefused", func(t *testing.T) {
		ctx := t.Context()
		o := newOwner(t, s, "reset-cy@example.com")
		exp := cloudstore.OwnerToken{Hash: hash64('5'), OwnerID: o.ID, Purpose: cloudstore.TokenReset, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		verify := cloudstore.OwnerToken{Hash: hash64('6'), OwnerID: o.ID, Purpose: cloudstore.TokenVerify, CreatedAt: t0, ExpiresAt: t0.Add(48 * time.Hour)}
		reset := cloudstore.OwnerToken{Hash: hash64('7'), OwnerID: o.ID, Purpose: cloudstore.TokenReset, CreatedAt: t0, ExpiresAt: t0.Add(48 * time.Hour)}
		for _, tok := range []cloudstore.OwnerToken{exp, verify, reset} {
			if err := s.CreateOwnerToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := s.OwnerByResetToken(ctx, reset.Hash, t0.Add(time.Minute)); err != nil || got.ID != o.ID {
			t.Errorf("OwnerByResetToken(good) = %+v, %v; want the owner", got, err)
		}
		for name, h := range map[string]string{"expired": exp.Hash, "verify": verify.Hash, "malformed": "x"} {
			if _, err := s.OwnerByResetToken(ctx, h, t0.Add(time.Hour)); !errors.Is(err, cloudstore.ErrNotFound) {
				t.Errorf("OwnerByResetToken(%s) = %v, want ErrNotFound", name, err)
			}
		}
		if _, err := s.ResetOwnerPassword(ctx, exp.Hash, newPHC, t0.Add(time.Hour)); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("ResetOwnerPassword(expired) = %v, want ErrNotFound", err)
		}
		if _, err := s.ResetOwnerPassword(ctx, verify.Hash, newPHC, t0.Add(time.Minute)); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("ResetOwnerPassword(verify token) = %v, want ErrNotFound", err)
		}
		if _, err := s.VerifyOwner(ctx, reset.Hash, t0.Add(time.Minute)); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("VerifyOwner(reset token) = %v, want ErrNotFound", err)
		}
		if _, err := s.ResetOwnerPassword(ctx, "not-a-hash", newPHC, t0); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("ResetOwnerPassword(malformed) = %v, want ErrNotFound", err)
		}
		if _, err := s.ResetOwnerPassword(ctx, reset.Hash, "plain text password", t0.Add(time.Minute)); !errors.Is(err, cloudstore.ErrInvalid) {
			t.Errorf("ResetOwnerPassword(not a PHC string) = %v, want ErrInvalid", err)
		}
		g, _ := s.GetOwner(ctx, o.ID)
		if g.PasswordHash == newPHC || !g.VerifiedAt.IsZero() {
			t.Errorf("owner after refused resets = %+v, want unchanged and unverified", g)
		}
		// The refused attempts spent nothing: the reset token still works.
		if _, err := s.ResetOwnerPassword(ctx, reset.Hash, newPHC, t0.Add(time.Minute)); err != nil {
			t.Errorf("ResetOwnerPassword(good token after refusals) = %v", err)
		}
		if _, err := s.OwnerByResetToken(ctx, reset.Hash, t0.Add(2*time.Minute)); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("OwnerByResetToken(spent) = %v, want ErrNotFound", err)
		}
	})
}
