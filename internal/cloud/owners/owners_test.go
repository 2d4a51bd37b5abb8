package owners

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moat-iot/moat/internal/cloud/claimcode"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	moatsqlite "github.com/moat-iot/moat/internal/store/sqlite"
)

var t0 = time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)

// clock is an injected clock the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t     *testing.T
	svc   *Service
	store *cloudstore.Store
	path  string
	clock *clock
	reg   *prometheus.Registry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cloud.db")
	st, err := cloudstore.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := &clock{t: t0}
	reg := prometheus.NewRegistry()
	svc, err := New(Config{Store: st, BaseURL: "https://portal.example.com", Now: c.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, svc: svc, store: st, path: path, clock: c, reg: reg}
}

// mails returns the KindEmail outbox rows, oldest first, read straight from the database.
func (f *fixture) mails() []outbox.EmailPayload {
	f.t.Helper()
	db, err := moatsqlite.OpenPool(f.t.Context(), f.path, true)
	if err != nil {
		f.t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(f.t.Context(), `SELECT payload FROM outbox WHERE kind = 'email' ORDER BY id`)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []outbox.EmailPayload
	for rows.Next() {
		var p string
		var m outbox.EmailPayload
		if err := rows.Scan(&p); err != nil || json.Unmarshal([]byte(p), &m) != nil {
			f.t.Fatalf("outbox row %q: %v", p, err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// verifiedOwner signs email up, follows the mailed link and returns the owner.
func (f *fixture) verifiedOwner(email, password string) cloudstore.Owner {
	f.t.Helper()
	ctx := f.t.Context()
	if err := f.svc.SignUp(ctx, email, "Owner "+email, password, "192.0.2.1:4000"); err != nil {
		f.t.Fatalf("SignUp(%s) = %v", email, err)
	}
	var token string
	for _, m := range f.mails() {
		if m.To == email {
			_, after, ok := strings.Cut(m.Text, "/portal/verify?token=")
			if ok {
				token = strings.Fields(after)[0]
			}
		}
	}
	o, err := f.svc.Verify(ctx, token)
	if err != nil {
		f.t.Fatalf("Verify(token of %s) = %v", email, err)
	}
	return o
}

var devA = strings.Repeat("a", 64)

// code stores a manufacture claim code for device and returns it.
func (f *fixture) code(device string) string {
	f.t.Helper()
	c := claimcode.New()
	h, _ := claimcode.Hash(c)
	if err := f.store.PutClaimCodes(f.t.Context(), []cloudstore.ClaimCode{{Device: device, Product: "dw100", CodeHash: h, CreatedAt: f.clock.Now()}}); err != nil {
		f.t.Fatal(err)
	}
	return c
}

func counter(t *testing.T, v *prometheus.CounterVec, reason string) int {
	t.Helper()
	return int(testutil.ToFloat64(v.WithLabelValues(reason)))
}

func TestConfig_ValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	err := Config{BaseURL: "http://portal.example.com/x"}.Validate()
	for _, want := range []string{"store", "base_url", "now", "logger", "registerer"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Config{}.Validate() = %v, want a problem with %s", err, want)
		}
	}
}

func TestOwners_SignUpVerifySignIn(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	const pw = "correct horse battery"
	if err := f.svc.SignUp(ctx, "Ann@Example.com", "Ann", pw, "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	o, err := f.store.OwnerByEmail(ctx, "ann@example.com")
	if err != nil || !strings.HasPrefix(o.PasswordHash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("stored owner = %+v, %v; want an argon2id PHC hash", o, err)
	}
	if strings.Contains(o.PasswordHash, pw) {
		t.Fatal("the password is stored in clear")
	}
	// Unverified: the right password says so; a wrong one does not.
	if _, err := f.svc.SignIn(ctx, "ann@example.com", pw, "192.0.2.1:1"); !errors.Is(err, ErrUnverified) {
		t.Errorf("SignIn(unverified, right password) = %v, want ErrUnverified", err)
	}
	if _, err := f.svc.SignIn(ctx, "ann@example.com", "wrong password!", "192.0.2.1:1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("SignIn(unverified, wrong password) = %v, want ErrBadCredentials", err)
	}
	mails := f.mails()
	if len(mails) != 1 || mails[0].To != "ann@example.com" || !strings.Contains(mails[0].Text, "https://portal.example.com/portal/verify?token=") {
		t.Fatalf("mails = %+v, want one verification link", mails)
	}
	token := strings.Fields(strings.SplitN(mails[0].Text, "token=", 2)[1])[0]
	if _, err := f.svc.Verify(ctx, token); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if _, err := f.svc.Verify(ctx, token); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify(token again) = %v, want ErrNotFound", err)
	}
	got, err := f.svc.SignIn(ctx, "ANN@example.com", pw, "192.0.2.1:1")
	if err != nil || got.ID != o.ID {
		t.Fatalf("SignIn = %+v, %v", got, err)
	}
	if got.FailedSignIns != 0 {
		t.Errorf("after a right password FailedSignIns = %d, want 0", got.FailedSignIns)
	}
}

func TestOwners_VerifyLinkExpires(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.svc.SignUp(t.Context(), "late@example.com", "Late", "a fine password", "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	token := strings.Fields(strings.SplitN(f.mails()[0].Text, "token=", 2)[1])[0]
	f.clock.Advance(VerifyTokenLifetime)
	if _, err := f.svc.Verify(t.Context(), token); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify(after %s) = %v, want ErrNotFound", VerifyTokenLifetime, err)
	}
}

func TestOwners_SignUpDoesNotRevealAccounts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.verifiedOwner("ann@example.com", "first password")
	// A second sign-up for the address: the same answer, no second account, the password
	// unchanged, the owner told by mail (once an hour, however often it happens).
	for range 3 {
		if err := f.svc.SignUp(ctx, "ann@example.com", "Mallory", "mallory's password", "198.51.100.7:1"); err != nil {
			t.Fatalf("SignUp(existing address) = %v, want nil (the same answer as a new address)", err)
		}
	}
	if _, err := f.svc.SignIn(ctx, "ann@example.com", "mallory's password", "198.51.100.8:1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("SignIn(with the second sign-up's password) = %v, want ErrBadCredentials", err)
	}
	if got, _ := f.store.GetOwner(ctx, o.ID); got.Name != o.Name {
		t.Errorf("owner name = %q, want unchanged %q", got.Name, o.Name)
	}
	mails := f.mails()
	if len(mails) != 2 || !strings.Contains(mails[1].Subject, "tried to sign up") {
		t.Errorf("mails = %+v, want the verification and one notice", mails)
	}
	// An unverified address signed up again gets a new link, at most MaxVerifyMailsPerDay a day.
	for range 5 {
		if err := f.svc.SignUp(ctx, "bob@example.com", "Bob", "bob's password", "203.0.113.1:1"); err != nil && !errors.Is(err, ErrThrottled) {
			t.Fatal(err)
		}
	}
	n := 0
	for _, m := range f.mails() {
		if m.To == "bob@example.com" {
			n++
		}
	}
	if n != MaxVerifyMailsPerDay {
		t.Errorf("verification mails to bob = %d, want %d", n, MaxVerifyMailsPerDay)
	}
}

func TestOwners_RefusesBadSignUpInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	long := strings.Repeat("x", 300)
	for _, tc := range []struct{ name, email, owner, password, field string }{
		{"malformed email", "not-an-address", "Ann", "a fine password", "email"},
		{"email with display name", "Ann <ann@example.com>", "Ann", "a fine password", "email"},
		{"oversized email", long + "@example.com", "Ann", "a fine password", "email"},
		{"header injection in email", "ann@example.com\r\nBcc: all@example.com", "Ann", "a fine password", "email"},
		{"email without domain dot", "ann@localhost", "Ann", "a fine password", "email"},
		{"empty name", "ann@example.com", "  ", "a fine password", "name"},
		{"oversized name", "ann@example.com", long, "a fine password", "name"},
		{"control characters in name", "ann@example.com", "Ann\x00\x1b[31m", "a fine password", "name"},
		{"newline in name", "ann@example.com", "Ann\nBcc: x", "a fine password", "name"},
		{"invalid UTF-8 name", "ann@example.com", "Ann\xff", "a fine password", "name"},
		{"short password", "ann@example.com", "Ann", "short", "password"},
		{"oversized password", "ann@example.com", "Ann", strings.Repeat("ab", 65), "password"},
		{"one repeated character", "ann@example.com", "Ann", "aaaaaaaaaaaa", "password"},
		{"one repeated rune", "ann@example.com", "Ann", "ééééééééééé", "password"},
		{"password is the email", "ann@example.com", "Ann", "ANN@example.com", "password"},
		{"invalid UTF-8 password", "ann@example.com", "Ann", "password\xff\xfe", "password"},
	} {
		err := f.svc.SignUp(ctx, tc.email, tc.owner, tc.password, "192.0.2.9:1")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: SignUp = %v, want ErrInvalid naming %s", tc.name, err, tc.field)
		}
	}
	// Every problem at once.
	err := f.svc.SignUp(ctx, "x", "", "short", "192.0.2.9:1")
	for _, field := range []string{"email:", "name:", "password:"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("SignUp(all bad) = %v, want %s named", err, field)
		}
	}
	if _, err := f.store.OwnerByEmail(ctx, "ann@example.com"); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("an owner was stored from bad input: %v", err)
	}
	if m := f.mails(); len(m) != 0 {
		t.Errorf("mails after bad input = %+v, want none", m)
	}
}

func TestOwners_PasswordGuessingIsSlowedAndCounted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	const pw = "the right password"
	o := f.verifiedOwner("ann@example.com", pw)
	// Per account: LockAfter wrong passwords lock it, even for the right password, from
	// any address.
	for i := range LockAfter {
		if _, err := f.svc.SignIn(ctx, o.Email, "a wrong password", "198.51.100.1:1"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("wrong password #%d: %v, want ErrBadCredentials", i+1, err)
		}
	}
	_, err := f.svc.SignIn(ctx, o.Email, pw, "203.0.113.5:1")
	if !errors.Is(err, ErrLocked) || RetryAfter(err) != LockBase {
		t.Fatalf("SignIn(right password, locked account) = %v (retry after %s), want ErrLocked for %s", err, RetryAfter(err), LockBase)
	}
	if got := counter(t, f.svc.signInFailures, ReasonBadPassword); got != LockAfter {
		t.Errorf("bad_password failures counted = %d, want %d", got, LockAfter)
	}
	if got := counter(t, f.svc.signInFailures, ReasonLocked); got != 1 {
		t.Errorf("locked refusals counted = %d, want 1", got)
	}
	// The lock grows: one more wrong password after it ends locks for twice as long.
	f.clock.Advance(LockBase)
	if _, err := f.svc.SignIn(ctx, o.Email, "a wrong password", "203.0.113.5:1"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	if _, err := f.svc.SignIn(ctx, o.Email, pw, "203.0.113.5:1"); RetryAfter(err) != 2*LockBase {
		t.Errorf("after one more failure, SignIn = %v, want locked for %s", err, 2*LockBase)
	}
	f.clock.Advance(2 * LockBase)
	if _, err := f.svc.SignIn(ctx, o.Email, pw, "203.0.113.5:1"); err != nil {
		t.Fatalf("SignIn after the lock = %v", err)
	}
	if got, _ := f.store.GetOwner(ctx, o.ID); got.FailedSignIns != 0 {
		t.Errorf("failures after a right password = %d, want 0", got.FailedSignIns)
	}

	// Per client address: guesses over many accounts (unknown addresses here) from one
	// client are refused after AddressSignInBurst; another client is not.
	for i := range AddressSignInBurst {
		if _, err := f.svc.SignIn(ctx, "nobody"+string(rune('a'+i))+"@example.com", "some password", "192.0.2.66:1"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("guess #%d = %v, want ErrBadCredentials", i, err)
		}
	}
	if _, err := f.svc.SignIn(ctx, o.Email, pw, "192.0.2.66:2"); !errors.Is(err, ErrThrottled) || RetryAfter(err) <= 0 {
		t.Errorf("SignIn from the guessing client = %v, want ErrThrottled with a wait", err)
	}
	if _, err := f.svc.SignIn(ctx, o.Email, pw, "192.0.2.67:1"); err != nil {
		t.Errorf("SignIn from another client = %v, want success", err)
	}
	if got := counter(t, f.svc.signInFailures, ReasonUnknownEmail); got != AddressSignInBurst {
		t.Errorf("unknown_email failures counted = %d, want %d", got, AddressSignInBurst)
	}
	if got := counter(t, f.svc.signInFailures, ReasonThrottled); got != 1 {
		t.Errorf("throttled refusals counted = %d, want 1", got)
	}
	f.clock.Advance(AddressSignInRefill)
	if _, err := f.svc.SignIn(ctx, o.Email, pw, "192.0.2.66:3"); err != nil {
		t.Errorf("SignIn after the refill = %v, want success", err)
	}
}

func TestOwners_HashFloodIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.verifiedOwner("ann@example.com", "the right password")
	// Every slot taken (as by a flood of concurrent sign-ins) and no wait: the next
	// request is refused at once, not queued.
	f.svc.hash.wait = 0
	for range cap(f.svc.hash.slots) {
		f.svc.hash.slots <- struct{}{}
	}
	if _, err := f.svc.SignIn(ctx, o.Email, "the right password", "192.0.2.1:1"); !errors.Is(err, ErrBusy) {
		t.Errorf("SignIn with every hash slot taken = %v, want ErrBusy", err)
	}
	if err := f.svc.SignUp(ctx, "new@example.com", "New", "a new password", "192.0.2.2:1"); !errors.Is(err, ErrBusy) {
		t.Errorf("SignUp with every hash slot taken = %v, want ErrBusy", err)
	}
	if got := counter(t, f.svc.signInFailures, ReasonBusy); got != 1 {
		t.Errorf("busy refusals counted = %d, want 1", got)
	}
	// A waiting request gets a slot when one frees, and gives up when its context ends.
	f.svc.hash.wait = time.Hour
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.svc.SignIn(cctx, o.Email, "the right password", "192.0.2.1:1"); !errors.Is(err, context.Canceled) {
		t.Errorf("SignIn(cancelled, no slot) = %v, want context.Canceled", err)
	}
	<-f.svc.hash.slots
	if _, err := f.svc.SignIn(ctx, o.Email, "the right password", "192.0.2.1:1"); err != nil {
		t.Errorf("SignIn with a slot free = %v", err)
	}
}

func TestLimiter_MapIsBounded(t *testing.T) {
	t.Parallel()
	l := newLimiter(2, time.Minute, 100)
	for i := range 1000 {
		l.fail(clientKey("10.0."+string(rune('0'+i/256%10))+"."+string(rune('0'+i%10))+":1")+string(rune(i)), t0)
	}
	if n := l.size(); n != 100 {
		t.Errorf("limiter tracks %d keys after 1000 distinct ones, want its cap 100", n)
	}
	if ok, _ := l.allow("fresh", t0); !ok {
		t.Error("an unknown key is refused")
	}
}

func TestClientKey_GroupsIPv6By64(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"192.0.2.1:443":            "addr:192.0.2.1",
		"[2001:db8:1:2:3::4]:443":  "addr:2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::9]:1": "addr:2001:db8:1:2::/64",
		"[::ffff:192.0.2.1]:1":     "addr:192.0.2.1",
		"192.0.2.1":                "addr:192.0.2.1",
		"pipe":                     "addr:pipe",
	} {
		if got := clientKey(in); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOwners_ClaimCodeWorksOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	a := f.verifiedOwner("a@example.com", "password of a")
	b := f.verifiedOwner("b@example.com", "password of b")
	code := f.code(devA)
	got, err := f.svc.Claim(ctx, a.ID, strings.ToLower(code), "192.0.2.1:1")
	if err != nil || got.Device != devA || got.OwnerID != a.ID || !got.Since.Equal(t0) {
		t.Fatalf("Claim = %+v, %v", got, err)
	}
	for _, who := range []cloudstore.Owner{b, a} {
		if _, err := f.svc.Claim(ctx, who.ID, code, "192.0.2.2:1"); !errors.Is(err, ErrBadCode) {
			t.Errorf("Claim(spent code) by %s = %v, want ErrBadCode", who.Email, err)
		}
	}
	if _, err := f.svc.Appliance(ctx, b.ID, devA); !errors.Is(err, ErrNotFound) {
		t.Errorf("Appliance(A's, as B) = %v, want ErrNotFound", err)
	}
	if _, err := f.svc.Handover(ctx, b.ID, devA); !errors.Is(err, ErrNotFound) {
		t.Errorf("Handover(A's, as B) = %v, want ErrNotFound", err)
	}
}

func TestOwners_ClaimGuessingIsSlowedAndCounted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	a := f.verifiedOwner("a@example.com", "password of a")
	code := f.code(devA)
	for i := range ClaimBurst {
		if _, err := f.svc.Claim(ctx, a.ID, claimcode.New(), "192.0.2.1:1"); !errors.Is(err, ErrBadCode) {
			t.Fatalf("guess #%d = %v, want ErrBadCode", i, err)
		}
	}
	// Even the right code now waits, from any address: the owner's bucket is empty.
	if _, err := f.svc.Claim(ctx, a.ID, code, "203.0.113.1:1"); !errors.Is(err, ErrThrottled) {
		t.Errorf("Claim after %d wrong codes = %v, want ErrThrottled", ClaimBurst, err)
	}
	if _, err := f.svc.Claim(ctx, a.ID, "not a code", "203.0.113.1:1"); !errors.Is(err, ErrThrottled) {
		t.Errorf("Claim(malformed) while throttled = %v, want ErrThrottled", err)
	}
	if got := counter(t, f.svc.claimFailures, ReasonBadCode); got != ClaimBurst {
		t.Errorf("bad_code counted = %d, want %d", got, ClaimBurst)
	}
	if got := counter(t, f.svc.claimFailures, ReasonThrottled); got != 2 {
		t.Errorf("throttled counted = %d, want 2", got)
	}
	f.clock.Advance(ClaimRefill)
	if _, err := f.svc.Claim(ctx, a.ID, "7K3M-Q9XD-2B8F-RW4", "192.0.2.1:1"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Claim(15 characters) = %v, want ErrInvalid", err)
	}
	if got := counter(t, f.svc.claimFailures, ReasonMalformed); got != 1 {
		t.Errorf("malformed counted = %d, want 1", got)
	}
	if _, err := f.svc.Claim(ctx, a.ID, code, "192.0.2.1:1"); err != nil {
		t.Errorf("Claim(right code) after the refill = %v", err)
	}
}

func TestOwners_ClaimRefusesPastMaxAppliances(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	a := f.verifiedOwner("a@example.com", "password of a")
	var codes []cloudstore.ClaimCode
	var plain []string
	for i := range cloudstore.MaxAppliancesPerOwner + 1 {
		c := claimcode.New()
		h, _ := claimcode.Hash(c)
		dev := strings.Repeat("0", 60) + string("0123456789abcdef"[i/16%16]) + string("0123456789abcdef"[i%16]) + "ff"
		codes = append(codes, cloudstore.ClaimCode{Device: dev, Product: "dw100", CodeHash: h, CreatedAt: t0})
		plain = append(plain, c)
	}
	if err := f.store.PutClaimCodes(ctx, codes); err != nil {
		t.Fatal(err)
	}
	for _, c := range plain[:cloudstore.MaxAppliancesPerOwner] {
		if _, err := f.svc.Claim(ctx, a.ID, c, "192.0.2.1:1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.svc.Claim(ctx, a.ID, plain[cloudstore.MaxAppliancesPerOwner], "192.0.2.1:1"); !errors.Is(err, ErrTooManyAppliances) {
		t.Errorf("Claim(#%d) = %v, want ErrTooManyAppliances", cloudstore.MaxAppliancesPerOwner+1, err)
	}
}

func TestOwners_HandoverMovesApplianceAndHidesPastData(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	a := f.verifiedOwner("a@example.com", "password of a")
	b := f.verifiedOwner("b@example.com", "password of b")
	first := f.code(devA)
	if _, err := f.svc.Claim(ctx, a.ID, first, "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	if err := f.store.UpdateAppliance(ctx, a.ID, devA, "A's kitchen", ""); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(24 * time.Hour)
	code, err := f.svc.Handover(ctx, a.ID, devA)
	if err != nil {
		t.Fatal(err)
	}
	// A keeps it until B claims.
	if got, err := f.svc.Appliance(ctx, a.ID, devA); err != nil || got.Nickname != "A's kitchen" {
		t.Fatalf("A's appliance before B claims = %+v, %v", got, err)
	}
	f.clock.Advance(time.Hour)
	got, err := f.svc.Claim(ctx, b.ID, code, "192.0.2.2:1")
	if err != nil {
		t.Fatalf("B's Claim(hand-over code) = %v", err)
	}
	if got.OwnerID != b.ID || !got.Since.Equal(t0.Add(25*time.Hour)) || got.Nickname == "A's kitchen" {
		t.Errorf("B's appliance = %+v, want since B's claim and not A's nickname", got)
	}
	if _, err := f.svc.Appliance(ctx, a.ID, devA); !errors.Is(err, ErrNotFound) {
		t.Errorf("A's Appliance after the hand-over = %v, want ErrNotFound", err)
	}
	for _, c := range []string{code, first} {
		if _, err := f.svc.Claim(ctx, a.ID, c, "192.0.2.1:1"); !errors.Is(err, ErrBadCode) {
			t.Errorf("A's Claim(old code) = %v, want ErrBadCode", err)
		}
	}
}

func TestOwners_SessionsEndIdleAndAbsolute(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	a := f.verifiedOwner("a@example.com", "password of a")
	id, err := f.svc.NewSession(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Used every 20 minutes: alive until the absolute end.
	for f.clock.Now().Before(t0.Add(SessionLifetime - 20*time.Minute)) {
		f.clock.Advance(20 * time.Minute)
		if o, err := f.svc.Session(ctx, id); err != nil || o.ID != a.ID {
			t.Fatalf("Session at %s = %+v, %v", f.clock.Now().Sub(t0), o, err)
		}
	}
	f.clock.Advance(20 * time.Minute)
	if _, err := f.svc.Session(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Session after %s = %v, want ErrNotFound", SessionLifetime, err)
	}
	idle, _ := f.svc.NewSession(ctx, a.ID)
	f.clock.Advance(SessionIdle)
	if _, err := f.svc.Session(ctx, idle); !errors.Is(err, ErrNotFound) {
		t.Errorf("Session idle %s = %v, want ErrNotFound", SessionIdle, err)
	}
	out, _ := f.svc.NewSession(ctx, a.ID)
	if err := f.svc.EndSession(ctx, out); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Session(ctx, out); !errors.Is(err, ErrNotFound) {
		t.Errorf("Session after EndSession = %v, want ErrNotFound", err)
	}
	if _, err := f.svc.Session(ctx, "forged"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Session(forged) = %v, want ErrNotFound", err)
	}
	if _, err := f.svc.PruneSessions(ctx); err != nil {
		t.Error(err)
	}
}

func TestParsePHC_RefusesHostileParameters(t *testing.T) {
	t.Parallel()
	h := &hasher{slots: make(chan struct{}, 1)}
	good, err := h.hash(t.Context(), "a password!")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.verify(t.Context(), good, "a password!"); !ok || err != nil {
		t.Fatalf("verify(own hash) = %v, %v", ok, err)
	}
	for _, bad := range []string{
		"", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHQ$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=2,p=255$c2FsdHNhbHQ$" + strings.Repeat("A", 43),
		"$argon2id$v=16$m=19456,t=2,p=1$c2FsdHNhbHQ$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=2,p=1$!!$" + strings.Repeat("A", 43),
	} {
		if _, err := h.verify(t.Context(), bad, "x"); err == nil {
			t.Errorf("verify(%q) = nil error, want refused", bad)
		}
	}
}

// TestOwners_LockDoesNotRevealAccounts: an address without an account answers as an
// account does, wrong password by wrong password: bad credentials, then locked for the
// same time, growing the same way. Were it never "locked", five tries would tell a
// guesser which addresses have accounts.
func TestOwners_LockDoesNotRevealAccounts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.verifiedOwner("ann@example.com", "the right password")
	answers := func(email string) []string {
		var out []string
		try := func(addr string) {
			_, err := f.svc.SignIn(ctx, email, "a wrong password", addr)
			out = append(out, fmt.Sprintf("%v/%s", err, RetryAfter(err)))
		}
		for i := range LockAfter + 1 {
			try(fmt.Sprintf("198.51.100.%d:1", i+1)) // other clients: the address limiter stays out of it
		}
		f.clock.Advance(LockBase)
		try("198.51.100.99:1")
		try("198.51.100.98:1")
		return out
	}
	known := answers(o.Email)
	unknown := answers("nobody@example.com")
	if !slices.Equal(known, unknown) {
		t.Errorf("an account answers\n%q\nan address without one\n%q", known, unknown)
	}
	if !strings.Contains(known[LockAfter], ErrLocked.Error()) {
		t.Errorf("answer after %d wrong passwords = %q, want locked", LockAfter, known[LockAfter])
	}
	if f.svc.phantoms.size() != 1 {
		t.Errorf("phantom locks held = %d, want 1", f.svc.phantoms.size())
	}
}
