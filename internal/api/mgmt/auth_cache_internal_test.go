package mgmt

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/auth"
)

func cachedToken(i int, user string) (auth.Token, *auth.Principal) {
	tok := auth.Token{ID: auth.TokenID(fmt.Sprintf("tok_%d", i)), UserID: auth.UserID(user)}
	return tok, &auth.Principal{User: auth.User{ID: tok.UserID}, TokenID: tok.ID}
}

func putToken(c *authCache, i int, user string, now time.Time) {
	tok, p := cachedToken(i, user)
	c.put(c.generation(), tok, p, now)
}

func hit(c *authCache, i int, now time.Time) bool {
	_, ok := c.get(auth.TokenID(fmt.Sprintf("tok_%d", i)), now)
	return ok
}

// Whoever can make many tokens authenticate cannot grow the cache past its bound; the least
// recently used token goes first.
func TestAuth_CacheIsBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	c := newAuthCache(time.Minute, 3)
	for i := range 3 {
		putToken(c, i, "usr_a", now)
	}
	hit(c, 0, now) // tok_1 is now the least recently used
	putToken(c, 3, "usr_a", now)
	if hit(c, 1, now) {
		t.Error("get(tok_1) after one eviction = hit, want the least recently used evicted")
	}
	if !hit(c, 0, now) || !hit(c, 2, now) || !hit(c, 3, now) {
		t.Error("get(tok_0, tok_2, tok_3) after one eviction: a miss, want the recently used kept")
	}
	for i := 4; i < 1000; i++ {
		putToken(c, i, "usr_a", now)
		if n := c.len(); n > 3 {
			t.Fatalf("after put(tok_%d): len = %d, want at most 3", i, n)
		}
	}
	if len(c.byID) != c.lru.Len() {
		t.Errorf("index holds %d entries, list %d, want the same", len(c.byID), c.lru.Len())
	}
	// Putting the same token again replaces its entry rather than adding one.
	putToken(c, 999, "usr_a", now)
	if n := c.len(); n != 3 {
		t.Errorf("after putting tok_999 again: len = %d, want 3", n)
	}
}

// An entry lapses after the TTL: another replica's change, if its publication is lost, is
// seen here within it.
func TestAuth_CacheEntryLapsesAfterTTL(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	c := newAuthCache(5*time.Second, 10)
	putToken(c, 1, "usr_a", now)
	if !hit(c, 1, now.Add(5*time.Second-time.Nanosecond)) {
		t.Error("get just before the TTL = miss, want hit")
	}
	if hit(c, 1, now.Add(5*time.Second)) {
		t.Error("get at the TTL = hit, want miss")
	}
	if n := c.len(); n != 0 {
		t.Errorf("len after the lapsed get = %d, want 0 (dropped)", n)
	}
}

// A lookup that read the store before a revocation must not put the token back: it would
// be served for a whole TTL after the revocation returned.
func TestAuth_LookupRacingRevocationNeverFillsCache(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	c := newAuthCache(time.Minute, 10)
	gen := c.generation()                  // a request starts its read ...
	c.invalidate(AuthChangeToken, "tok_1") // ... a revocation commits and clears ...
	tok, p := cachedToken(1, "usr_a")
	c.put(gen, tok, p, now) // ... and the request, with what it read before, tries to fill
	if hit(c, 1, now) {
		t.Error("get after a put under an older generation = hit, want miss")
	}
	c.put(c.generation(), tok, p, now)
	if !hit(c, 1, now) {
		t.Error("get after a put under the current generation = miss, want hit")
	}
}

// Each kind of change drops what it names, and a kind this replica does not know drops
// everything (fail closed).
func TestAuth_InvalidateKinds(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	fill := func() *authCache {
		c := newAuthCache(time.Minute, 10)
		putToken(c, 1, "usr_a", now)
		putToken(c, 2, "usr_a", now)
		putToken(c, 3, "usr_b", now)
		return c
	}
	for _, tc := range []struct {
		kind, id string
		left     []int
	}{
		{AuthChangeToken, "tok_1", []int{2, 3}},
		{AuthChangeToken, "tok_9", []int{1, 2, 3}},
		{AuthChangeUser, "usr_a", []int{3}},
		{AuthChangeUser, "usr_c", []int{1, 2, 3}},
		{AuthChangeAll, "", nil},
		{"tenant-deleted", "tnt_1", nil},
	} {
		c := fill()
		c.invalidate(tc.kind, tc.id)
		var left []int
		for i := 1; i <= 3; i++ {
			if hit(c, i, now) {
				left = append(left, i)
			}
		}
		if fmt.Sprint(left) != fmt.Sprint(tc.left) {
			t.Errorf("invalidate(%q, %q) left tokens %v, want %v", tc.kind, tc.id, left, tc.left)
		}
	}
}

func TestParseAuthChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		payload  string
		kind, id string
		err      error
	}{
		{AuthChangePayload(AuthChangeToken, "tok_1"), AuthChangeToken, "tok_1", nil},
		{AuthChangePayload(AuthChangeAll, ""), AuthChangeAll, "", nil},
		{"user:usr_a:b", AuthChangeUser, "usr_a:b", nil},
		{"", "", "", ErrBadAuthChange},
		{"token", "", "", ErrBadAuthChange},
		{":tok_1", "", "", ErrBadAuthChange},
		{"token:" + string(make([]byte, MaxAuthChangeBytes)), "", "", ErrBadAuthChange},
	} {
		kind, id, err := ParseAuthChange(tc.payload)
		if kind != tc.kind || id != tc.id || !errors.Is(err, tc.err) {
			t.Errorf("ParseAuthChange(%.20q) = %q, %q, %v, want %q, %q, %v", tc.payload, kind, id, err, tc.kind, tc.id, tc.err)
		}
	}
}

func FuzzParseAuthChange(f *testing.F) {
	f.Add("token:tok_01a24b07de20ee8df9f8c70b0676e78b")
	f.Add("user:usr_01a24b07de1c9c95e7397fa86db9a6a3")
	f.Add("all:")
	f.Fuzz(func(t *testing.T, payload string) {
		kind, id, err := ParseAuthChange(payload)
		if err != nil {
			return
		}
		if kind == "" || len(payload) > MaxAuthChangeBytes {
			t.Fatalf("ParseAuthChange(%q) = %q, %q, nil, want an error", payload, kind, id)
		}
		if got := AuthChangePayload(kind, id); got != payload {
			t.Fatalf("AuthChangePayload(ParseAuthChange(%q)) = %q, want the payload", payload, got)
		}
		// Whatever it says, invalidating with it never panics.
		c := newAuthCache(time.Minute, 2)
		putToken(c, 1, "usr_a", time.Unix(1e9, 0))
		c.invalidate(kind, id)
	})
}
