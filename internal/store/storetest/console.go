package storetest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/store"
)

var consoleTests = []test{
	{"SessionRoundTrip", testConsoleSessionRoundTrip},
	{"SessionsBoundedPerUser", testConsoleSessionsBounded},
	{"DeleteExpired", testConsoleDeleteExpired},
	{"LinkConsumedOnce", testConsoleLinkConsumedOnce},
	{"LinksBounded", testConsoleLinksBounded},
	{"LinkExpired", testConsoleLinkExpired},
	{"LinkConcurrentConsumersOneWins", testConsoleLinkConcurrent},
}

func (h *harness) session(u auth.User, k auth.Token, id string, ttl time.Duration) store.ConsoleSession {
	h.t.Helper()
	at := h.tick()
	s := store.ConsoleSession{IDHash: id, UserID: u.ID, TokenID: k.ID, CSRFSecret: "00ff", CreatedAt: at, LastUsedAt: at, ExpiresAt: at.Add(ttl)}
	h.must("ConsoleSessions().Create", func(tx store.Tx) error { return tx.ConsoleSessions().Create(h.ctx(), s, 3) })
	return s
}

func (h *harness) getSession(id string) (store.ConsoleSession, error) {
	return read(h, func(ctx context.Context, tx store.Tx) (store.ConsoleSession, error) {
		return tx.ConsoleSessions().Get(ctx, id)
	})
}

func utcSession(s store.ConsoleSession) store.ConsoleSession {
	s.CreatedAt, s.LastUsedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.LastUsedAt.UTC(), s.ExpiresAt.UTC()
	return s
}

func testConsoleSessionRoundTrip(h *harness) {
	u := h.user("alice", false)
	k := h.token(u.ID, "laptop", 0)
	s := h.session(u, k, "aa01", time.Hour)
	got, err := h.getSession("aa01")
	wantEqual(h.t, "Get(aa01)", got, err, utcSession(s))

	at := h.tick()
	h.must("Touch", func(tx store.Tx) error { return tx.ConsoleSessions().Touch(h.ctx(), "aa01", at) })
	got, err = h.getSession("aa01")
	s.LastUsedAt = at
	wantEqual(h.t, "Get(aa01) after Touch", got, err, utcSession(s))

	h.must("Delete", func(tx store.Tx) error { return tx.ConsoleSessions().Delete(h.ctx(), "aa01") })
	_, err = h.getSession("aa01")
	wantErr(h.t, "Get(deleted)", err, store.ErrNotFound)
	err = h.tx(func(tx store.Tx) error { return tx.ConsoleSessions().Delete(h.ctx(), "aa01") })
	wantErr(h.t, "Delete(deleted)", err, store.ErrNotFound)
}

// testConsoleSessionsBounded: one user's sign-ins keep at most maxPerUser sessions, the
// newest; another user's are untouched.
func testConsoleSessionsBounded(h *harness) {
	u, v := h.user("alice", false), h.user("bob", false)
	ku, kv := h.token(u.ID, "a", 0), h.token(v.ID, "b", 0)
	h.session(v, kv, "bb00", time.Hour)
	for i := range 5 {
		h.session(u, ku, fmt.Sprintf("aa%02d", i), time.Hour)
	}
	for i := range 5 {
		_, err := h.getSession(fmt.Sprintf("aa%02d", i))
		if i < 2 {
			wantErr(h.t, fmt.Sprintf("Get(aa%02d), beyond the bound", i), err, store.ErrNotFound)
		} else if err != nil {
			h.t.Errorf("Get(aa%02d) = %v, want the session", i, err)
		}
	}
	if _, err := h.getSession("bb00"); err != nil {
		h.t.Errorf("Get(bb00) of another user = %v, want the session", err)
	}
}

func testConsoleDeleteExpired(h *harness) {
	u := h.user("alice", false)
	k := h.token(u.ID, "a", 0)
	old := h.session(u, k, "aa01", time.Hour)     // expires absolutely
	idle := h.session(u, k, "aa02", 10*time.Hour) // idle
	live := h.session(u, k, "aa03", 10*time.Hour)
	now := old.ExpiresAt
	h.must("Touch(live)", func(tx store.Tx) error { return tx.ConsoleSessions().Touch(h.ctx(), "aa03", now) })
	link := store.SignInLink{CodeHash: "cc01", UserID: u.ID, TokenID: k.ID, CreatedAt: old.CreatedAt, ExpiresAt: old.CreatedAt.Add(time.Minute)}
	h.must("CreateLink", func(tx store.Tx) error { return tx.ConsoleSessions().CreateLink(h.ctx(), link, 5) })
	n, err := read(h, func(ctx context.Context, tx store.Tx) (int64, error) {
		return tx.ConsoleSessions().DeleteExpired(ctx, now, idle.LastUsedAt)
	})
	if err != nil || n != 3 {
		h.t.Errorf("DeleteExpired = %d, %v; want 3 (absolute, idle, link), nil", n, err)
	}
	for _, id := range []string{old.IDHash, idle.IDHash} {
		_, err := h.getSession(id)
		wantErr(h.t, "Get("+id+") after DeleteExpired", err, store.ErrNotFound)
	}
	if _, err := h.getSession(live.IDHash); err != nil {
		h.t.Errorf("Get(live) after DeleteExpired = %v, want the session", err)
	}
}

func (h *harness) link(u auth.User, k auth.Token, code string, ttl time.Duration) store.SignInLink {
	at := h.tick()
	l := store.SignInLink{CodeHash: code, UserID: u.ID, TokenID: k.ID, CreatedAt: at, ExpiresAt: at.Add(ttl)}
	h.must("CreateLink", func(tx store.Tx) error { return tx.ConsoleSessions().CreateLink(h.ctx(), l, 5) })
	l.CreatedAt, l.ExpiresAt = l.CreatedAt.UTC(), l.ExpiresAt.UTC()
	return l
}

func (h *harness) consume(code string, now time.Time) (store.SignInLink, error) {
	return read(h, func(ctx context.Context, tx store.Tx) (store.SignInLink, error) {
		return tx.ConsoleSessions().ConsumeLink(ctx, code, now)
	})
}

// testConsoleLinkConsumedOnce attacks the single use of a sign-in link: a second use finds
// nothing.
func testConsoleLinkConsumedOnce(h *harness) {
	u := h.user("alice", false)
	k := h.token(u.ID, "a", 0)
	l := h.link(u, k, "cc01", 5*time.Minute)
	got, err := h.consume("cc01", l.CreatedAt.Add(time.Second))
	wantEqual(h.t, "ConsumeLink(cc01)", got, err, l)
	_, err = h.consume("cc01", l.CreatedAt.Add(2*time.Second))
	wantErr(h.t, "ConsumeLink(cc01) again", err, store.ErrNotFound)
	_, err = h.consume("cc02", l.CreatedAt)
	wantErr(h.t, "ConsumeLink(unknown)", err, store.ErrNotFound)
}

func testConsoleLinkExpired(h *harness) {
	u := h.user("alice", false)
	k := h.token(u.ID, "a", 0)
	l := h.link(u, k, "cc01", 5*time.Minute)
	_, err := h.consume("cc01", l.ExpiresAt)
	wantErr(h.t, "ConsumeLink(at expiry)", err, store.ErrNotFound)
}

func testConsoleLinkConcurrent(h *harness) {
	u := h.user("alice", false)
	k := h.token(u.ID, "a", 0)
	l := h.link(u, k, "cc01", 5*time.Minute)
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 8 {
		wg.Go(func() {
			if _, err := h.consume("cc01", l.CreatedAt.Add(time.Second)); err == nil {
				mu.Lock()
				won++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if won != 1 {
		h.t.Errorf("%d concurrent ConsumeLink calls succeeded, want 1", won)
	}
}

// testConsoleLinksBounded attacks the bound on a user's sign-in links: asking for links
// again and again keeps only the newest (the harness's link helper allows 5), and another
// user's links are not touched.
func testConsoleLinksBounded(h *harness) {
	u, v := h.user("alice", false), h.user("bob", false)
	k, kv := h.token(u.ID, "a", 0), h.token(v.ID, "b", 0)
	bob := h.link(v, kv, "bb00", time.Hour)
	var links []store.SignInLink
	for i := range 8 {
		links = append(links, h.link(u, k, fmt.Sprintf("ee%02d", i), time.Hour))
	}
	now := links[len(links)-1].CreatedAt
	for i, l := range links {
		_, err := h.consume(l.CodeHash, now)
		if i < 3 {
			wantErr(h.t, "ConsumeLink(one of the oldest three)", err, store.ErrNotFound)
		} else if err != nil {
			h.t.Errorf("ConsumeLink(link %d of 8) = %v, want the link", i, err)
		}
	}
	if _, err := h.consume(bob.CodeHash, now); err != nil {
		h.t.Errorf("ConsumeLink(bob's) = %v, want bob's link kept", err)
	}
}
