package auth_test

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/tenant"
)

func TestToken_RoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tok, presented := auth.NewToken("usr_x", "ci", now, time.Hour)
	id, secret, err := auth.ParseToken(presented)
	if err != nil {
		t.Fatalf("ParseToken(%q) = %v", presented, err)
	}
	if id != tok.ID || !tok.Matches(secret) {
		t.Errorf("ParseToken(NewToken) = %s, matches %v; want %s, true", id, tok.Matches(secret), tok.ID)
	}
	if strings.Contains(string(tok.Hash), secret) || len(tok.Hash) != 32 {
		t.Errorf("token record holds %d-byte hash; want the 32-byte SHA-256 only", len(tok.Hash))
	}
	if !tok.Active(now) || tok.Active(now.Add(time.Hour)) {
		t.Error("token with 1h TTL: want active now and expired after an hour")
	}
	revoked := now
	tok.RevokedAt = &revoked
	if tok.Active(now) {
		t.Error("revoked token is active")
	}
	other, _ := auth.NewToken("usr_x", "ci", now, 0)
	if other.Matches(secret) {
		t.Error("another token matches this secret")
	}
}

// TestToken_RejectsWrongSecret: Matches hashes the presented secret from a buffer on the
// stack; a secret that differs anywhere, is cut short, runs on, or is longer than that
// buffer, does not match.
func TestToken_RejectsWrongSecret(t *testing.T) {
	t.Parallel()
	tok, presented := auth.NewToken("usr_x", "ci", time.Now(), 0)
	_, secret, err := auth.ParseToken(presented)
	if err != nil {
		t.Fatal(err)
	}
	flipped := []byte(secret)
	flipped[len(flipped)-1] ^= 1
	for _, s := range []string{"", secret[:len(secret)-1], secret + "A", string(flipped), secret + strings.Repeat("A", 100)} {
		if tok.Matches(s) {
			t.Errorf("Token.Matches(%q) = true, want false", s)
		}
	}
	if !tok.Matches(secret) {
		t.Errorf("Token.Matches(its secret) = false, want true")
	}
	long := strings.Repeat("s", 100) // past the stack buffer: hashed all the same
	tok.Hash = func() []byte { h := sha256.Sum256([]byte(long)); return h[:] }()
	if !tok.Matches(long) || tok.Matches(long[:64]) {
		t.Errorf("Token.Matches of a 100-byte secret: want true for it and false for its first 64 bytes")
	}
}

func TestParseToken_RejectsMalformed(t *testing.T) {
	t.Parallel()
	_, good := auth.NewToken("usr_x", "ci", time.Now(), 0)
	for _, s := range []string{
		"", "moat_", "moat_tok_", good[:len(good)-1], good + "A", strings.TrimPrefix(good, "moat_"),
		strings.Replace(good, ".", "", 1), strings.Replace(good, "tok_", "usr_", 1), "Bearer " + good,
	} {
		if _, _, err := auth.ParseToken(s); err == nil {
			t.Errorf("ParseToken(%q) = nil error, want malformed", s)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	_, good := auth.NewToken("usr_x", "ci", time.Now(), 0)
	f.Add(good)
	f.Add("moat_tok_0000.x")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := auth.ParseToken(s)
		if err != nil {
			return
		}
		if "moat_"+string(id)+"."+secret != s {
			t.Errorf("ParseToken(%q) = %q, %q; does not reassemble", s, id, secret)
		}
	})
}

func TestPrincipal_Require(t *testing.T) {
	t.Parallel()
	a, b := tenant.ID("tnt_a"), tenant.ID("tnt_b")
	p := &auth.Principal{Roles: map[tenant.ID]auth.Role{a: auth.Contributor}}
	cases := []struct {
		t    tenant.ID
		min  auth.Role
		kind problem.Kind
		ok   bool
	}{
		{a, auth.Reader, 0, true},
		{a, auth.Contributor, 0, true},
		{a, auth.Administrator, problem.Forbidden, false},
		{b, auth.Reader, problem.NotFound, false}, // another tenant: invisible, never forbidden
	}
	for _, c := range cases {
		err := p.Require(c.t, c.min)
		if c.ok != (err == nil) {
			t.Errorf("Require(%s, %s) = %v, want ok=%v", c.t, c.min, err, c.ok)
			continue
		}
		if err != nil && problem.From(err).Kind != c.kind {
			t.Errorf("Require(%s, %s) kind = %v, want %v", c.t, c.min, problem.From(err).Kind, c.kind)
		}
	}
	if auth.Role("Owner").AtLeast(auth.Reader) || auth.Role("").Valid() {
		t.Error("unknown roles must grant nothing")
	}
	var nobody *auth.Principal
	if nobody.RequireOperator() == nil || nobody.Require(a, auth.Reader) == nil {
		t.Error("a nil principal is allowed something")
	}
}
