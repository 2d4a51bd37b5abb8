package owners

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// resetToken returns the token of the newest reset link mailed to email ("" when none was).
func (f *fixture) resetToken(email string) string {
	f.t.Helper()
	token := ""
	for _, m := range f.mails() {
		if m.To != email {
			continue
		}
		if _, after, ok := strings.Cut(m.Text, "https://portal.example.com/portal/reset/confirm?token="); ok {
			token = strings.Fields(after)[0]
		}
	}
	return token
}

func (f *fixture) resets(result string) float64 {
	return testutil.ToFloat64(f.svc.resets.WithLabelValues(result))
}

func TestOwners_ResetTokenWorksOnceAndExpires(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.verifiedOwner("ann@example.com", "the old password")
	if err := f.svc.RequestReset(ctx, "ANN@example.com", "192.0.2.10:1"); err != nil {
		t.Fatal(err)
	}
	token := f.resetToken(o.Email)
	if token == "" {
		t.Fatalf("no reset link mailed: %+v", f.mails())
	}
	if err := f.svc.CheckResetLink(ctx, token); err != nil {
		t.Errorf("CheckResetLink(fresh) = %v", err)
	}
	if err := f.svc.ResetPassword(ctx, token, "the new password"); err != nil {
		t.Fatalf("ResetPassword = %v", err)
	}
	if _, err := f.svc.SignIn(ctx, o.Email, "the old password", "192.0.2.10:1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("SignIn(old password) = %v, want ErrBadCredentials", err)
	}
	if _, err := f.svc.SignIn(ctx, o.Email, "the new password", "192.0.2.10:1"); err != nil {
		t.Errorf("SignIn(new password) = %v", err)
	}
	// Once: the same link again is refused and changes nothing.
	if err := f.svc.ResetPassword(ctx, token, "a third password"); !errors.Is(err, ErrResetLink) {
		t.Errorf("ResetPassword(used link) = %v, want ErrResetLink", err)
	}
	if err := f.svc.CheckResetLink(ctx, token); !errors.Is(err, ErrResetLink) {
		t.Errorf("CheckResetLink(used) = %v, want ErrResetLink", err)
	}
	if _, err := f.svc.SignIn(ctx, o.Email, "a third password", "192.0.2.10:1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("SignIn(password of the refused reset) = %v, want ErrBadCredentials", err)
	}
	// Expiry: a link works for ResetTokenLifetime and not a moment longer.
	if err := f.svc.RequestReset(ctx, o.Email, "192.0.2.10:1"); err != nil {
		t.Fatal(err)
	}
	late := f.resetToken(o.Email)
	f.clock.Advance(ResetTokenLifetime)
	if err := f.svc.ResetPassword(ctx, late, "a late password"); !errors.Is(err, ErrResetLink) {
		t.Errorf("ResetPassword(after %s) = %v, want ErrResetLink", ResetTokenLifetime, err)
	}
	if _, err := f.svc.SignIn(ctx, o.Email, "the new password", "192.0.2.10:1"); err != nil {
		t.Errorf("SignIn after the expired reset = %v, want the password unchanged", err)
	}
	if got := f.resets(ResetBadLink); got != 2 {
		t.Errorf("%s{result=%q} = %v, want 2", metricResets, ResetBadLink, got)
	}
	if got := f.resets(ResetDone); got != 1 {
		t.Errorf("%s{result=%q} = %v, want 1", metricResets, ResetDone, got)
	}
}

func TestOwners_ResetEndsSessionsAndLock(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.verifiedOwner("ann@example.com", "the old password")
	stolen, err := f.svc.NewSession(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := f.svc.NewSession(ctx, o.ID)
	for range LockAfter {
		_, _ = f.svc.SignIn(ctx, o.Email, "a guess by someone", "198.51.100.1:1")
	}
	if _, err := f.svc.SignIn(ctx, o.Email, "the old password", "192.0.2.10:1"); !errors.Is(err, ErrLocked) {
		t.Fatalf("SignIn(locked) = %v, want ErrLocked", err)
	}
	if err := f.svc.RequestReset(ctx, o.Email, "192.0.2.10:1"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.ResetPassword(ctx, f.resetToken(o.Email), "the new password"); err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]string{"stolen": stolen, "own": mine} {
		if _, err := f.svc.Session(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Session(%s, after the reset) = %v, want ErrNotFound", name, err)
		}
	}
	if _, err := f.svc.SignIn(ctx, o.Email, "the new password", "192.0.2.10:1"); err != nil {
		t.Errorf("SignIn(new password right after the reset) = %v, want the lock cleared", err)
	}
}

func TestOwners_ResetVerifiesTheAddress(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	if err := f.svc.SignUp(ctx, "new@example.com", "New", "the first password", "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.RequestReset(ctx, "new@example.com", "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.ResetPassword(ctx, f.resetToken("new@example.com"), "the second password"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.SignIn(ctx, "new@example.com", "the second password", "192.0.2.1:1"); err != nil {
		t.Errorf("SignIn after a reset of an unverified account = %v, want verified by the reset", err)
	}
}

func TestOwners_ResetRequestDoesNotRevealAccounts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.verifiedOwner("ann@example.com", "the old password")
	before := len(f.mails())
	known := f.svc.RequestReset(ctx, "ann@example.com", "192.0.2.10:1")
	unknown := f.svc.RequestReset(ctx, "nobody@example.com", "192.0.2.11:1")
	if known != nil || unknown != nil {
		t.Errorf("RequestReset(known) = %v, RequestReset(unknown) = %v; want the same answer, nil", known, unknown)
	}
	mails := f.mails()[before:]
	if len(mails) != 1 || mails[0].To != "ann@example.com" {
		t.Errorf("mails after the requests = %+v, want one, to the account's address", mails)
	}
	for _, m := range f.mails() {
		if m.To == "nobody@example.com" {
			t.Errorf("a mail was sent to an address without an account: %+v", m)
		}
	}
	if err := f.svc.RequestReset(ctx, "not an address", "192.0.2.12:1"); !errors.Is(err, ErrInvalid) {
		t.Errorf("RequestReset(malformed) = %v, want ErrInvalid", err)
	}
}

func TestOwners_ResetRequestsAreLimitedAndCounted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.verifiedOwner("ann@example.com", "the old password")
	// Per account: MaxResetMailsPerDay mails a day, from however many addresses.
	for i := range MaxResetMailsPerDay + 2 {
		if err := f.svc.RequestReset(ctx, o.Email, "198.51.100."+string(rune('1'+i))+":1"); err != nil {
			t.Fatalf("request #%d: %v", i+1, err)
		}
	}
	n := 0
	for _, m := range f.mails() {
		if m.To == o.Email && strings.Contains(m.Subject, "Reset") {
			n++
		}
	}
	if n != MaxResetMailsPerDay {
		t.Errorf("reset mails = %d, want %d a day", n, MaxResetMailsPerDay)
	}
	if got := f.resets(ResetDailyLimit); got != 2 {
		t.Errorf("%s{result=%q} = %v, want 2", metricResets, ResetDailyLimit, got)
	}
	f.clock.Advance(24*time.Hour + time.Second)
	if err := f.svc.RequestReset(ctx, o.Email, "198.51.100.9:1"); err != nil || f.resets(ResetMailed) != MaxResetMailsPerDay+1 {
		t.Errorf("a day later: %v, %v mailed; want one more mail", err, f.resets(ResetMailed))
	}
	// Per client address: SignUpBurst requests (shared with sign-ups and resends), then
	// refused with the time to wait, for known and unknown addresses alike.
	const attacker = "203.0.113.7:1"
	for i := range SignUpBurst {
		if err := f.svc.RequestReset(ctx, "victim"+string(rune('a'+i))+"@example.com", attacker); err != nil {
			t.Fatalf("request #%d from one address: %v", i+1, err)
		}
	}
	err := f.svc.RequestReset(ctx, o.Email, attacker)
	if !errors.Is(err, ErrThrottled) || RetryAfter(err) <= 0 {
		t.Errorf("request past the burst = %v (retry after %s), want ErrThrottled with a wait", err, RetryAfter(err))
	}
	if err := f.svc.ResendVerification(ctx, "x@example.com", attacker); !errors.Is(err, ErrThrottled) {
		t.Errorf("resend from the throttled address = %v, want ErrThrottled (one limiter)", err)
	}
	if got := f.resets(ResetThrottled); got != 1 {
		t.Errorf("%s{result=%q} = %v, want 1", metricResets, ResetThrottled, got)
	}
	if got, want := f.resets(ResetRequested), float64(MaxResetMailsPerDay+2+1+SignUpBurst); got != want {
		t.Errorf("%s{result=%q} = %v, want %v", metricResets, ResetRequested, got, want)
	}
}

func TestOwners_ResetAndVerifyTokensDoNotMix(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	if err := f.svc.SignUp(ctx, "new@example.com", "New", "the first password", "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	verify := strings.Fields(strings.SplitN(f.mails()[0].Text, "token=", 2)[1])[0]
	if err := f.svc.RequestReset(ctx, "new@example.com", "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	reset := f.resetToken("new@example.com")
	if _, err := f.svc.Verify(ctx, reset); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify(reset token) = %v, want ErrNotFound", err)
	}
	if _, err := f.svc.SignIn(ctx, "new@example.com", "the first password", "192.0.2.1:1"); !errors.Is(err, ErrUnverified) {
		t.Errorf("SignIn after Verify(reset token) = %v, want still ErrUnverified", err)
	}
	if err := f.svc.ResetPassword(ctx, verify, "a hijacked password"); !errors.Is(err, ErrResetLink) {
		t.Errorf("ResetPassword(verify token) = %v, want ErrResetLink", err)
	}
	// Both still work for their own purpose: the refusals spent nothing.
	if _, err := f.svc.Verify(ctx, verify); err != nil {
		t.Errorf("Verify(its own token) = %v", err)
	}
	if err := f.svc.ResetPassword(ctx, reset, "the second password"); err != nil {
		t.Errorf("ResetPassword(its own token) = %v", err)
	}
}

func TestOwners_ResetRefusesBadPasswordsAndTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.verifiedOwner("ann@example.com", "the old password")
	if err := f.svc.RequestReset(ctx, o.Email, "192.0.2.10:1"); err != nil {
		t.Fatal(err)
	}
	token := f.resetToken(o.Email)
	for name, pw := range map[string]string{
		"short": "short", "long": strings.Repeat("p", MaxPasswordBytes+1), "one character": strings.Repeat("a", 20),
		"the address": "ANN@example.com", "invalid UTF-8": "password \xff\xfe",
	} {
		if err := f.svc.ResetPassword(ctx, token, pw); !errors.Is(err, ErrInvalid) {
			t.Errorf("ResetPassword(%s) = %v, want ErrInvalid", name, err)
		}
	}
	for name, tok := range map[string]string{"empty": "", "short": "abc", "long": strings.Repeat("A", 10000), "forged": strings.Repeat("A", len(token))} {
		if err := f.svc.ResetPassword(ctx, tok, "a fine new password"); !errors.Is(err, ErrResetLink) {
			t.Errorf("ResetPassword(%s token) = %v, want ErrResetLink", name, err)
		}
	}
	got, _ := f.store.GetOwner(ctx, o.ID)
	if got.PasswordHash != o.PasswordHash {
		t.Error("a refused reset changed the password")
	}
	// The refusals spent nothing: the link still works.
	if err := f.svc.ResetPassword(ctx, token, "a fine new password"); err != nil {
		t.Errorf("ResetPassword(good) after refusals = %v", err)
	}
	if got := f.resets(ResetBadPassword); got != 5 {
		t.Errorf("%s{result=%q} = %v, want 5", metricResets, ResetBadPassword, got)
	}
}
