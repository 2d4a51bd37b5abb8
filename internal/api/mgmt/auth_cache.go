package mgmt

import (
	"container/list"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/auth"
)

// The verified-token cache (issue 15 item 4). Authenticating a bearer token costs a read
// transaction of three queries (the token, its user, the user's roles); an API client sends
// the same token on every request, so the API keeps what it verified for a few seconds:
//
//   - Keyed by the token's ID, and a hit still compares the presented secret's SHA-256 with
//     the stored hash in constant time (auth.Token.Matches), so a wrong secret is refused
//     from the cache exactly as from the database and never served (attacked by
//     TestAuth_WrongSecretNeverServedFromCache). A refusal is never cached.
//   - Bounded: at most Config.AuthCacheEntries tokens, least recently used out first
//     (TestAuth_CacheIsBounded), each for at most Config.AuthCacheTTL and never past the
//     token's own expiry.
//   - Revocation stops a token at once. Every change to what a token authenticates as
//     (token revoked, member added, role changed, member removed) clears the entries it
//     touches on this replica before the request that made it returns
//     (TestAuth_RevokedTokenStopsAtOnce, TestAuth_RemovedMemberStopsAtOnce,
//     TestAuth_RoleChangeAppliesAtOnce), then calls Config.PublishAuthChange so that other
//     replicas clear theirs through InvalidateAuth (TestAuth_InvalidatorClearsEntry).
//     Without a publisher, another replica's change reaches this one within the TTL.
//   - A lookup that started before an invalidation never fills the cache: every
//     invalidation bumps a generation, and an entry read under an older one is dropped,
//     so a request racing a revocation cannot put the token back for a TTL.
//
// The cached principal is shared by the requests that hit it: nothing may change it.

// Defaults and bounds of the cache (Config.AuthCacheTTL, Config.AuthCacheEntries).
const (
	DefaultAuthCacheTTL     = 5 * time.Second
	DefaultAuthCacheEntries = 10_000
	// MaxAuthCacheTTL bounds how long a change on another replica can go unseen here when
	// the publication of a change is lost.
	MaxAuthCacheTTL = time.Minute
)

// The kinds of authentication change, the first half of an invalidation: "kind:id".
const (
	// AuthChangeToken: id is a token ID; the token was revoked.
	AuthChangeToken = "token"
	// AuthChangeUser: id is a user ID; its roles changed (a tenant granted, changed or
	// removed its membership) or the user is gone. Every token of the user is dropped.
	AuthChangeUser = "user"
	// AuthChangeAll: every cached token is dropped (id is empty). Any kind this replica
	// does not know means the same, so a newer replica's change is never ignored.
	AuthChangeAll = "all"
)

// MaxAuthChangeBytes bounds an invalidation payload ("kind:id").
const MaxAuthChangeBytes = 128

// Invalidator is told of a change to what tokens authenticate as: kind is one of the
// AuthChange kinds and id the token or user it names. The API calls Config.PublishAuthChange
// after the change committed and after it cleared its own cache; a publisher carries it to
// the other replicas (PostgreSQL NOTIFY with AuthChangePayload), whose listener calls
// InvalidateAuth. It must not block for long: it runs in the request that made the change.
type Invalidator func(kind, id string)

// AuthChangePayload is the notification payload of a change: "kind:id".
func AuthChangePayload(kind, id string) string { return kind + ":" + id }

// ErrBadAuthChange is returned for an invalidation payload that is not "kind:id".
var ErrBadAuthChange = errors.New("malformed authentication change")

// ParseAuthChange splits a notification payload made by AuthChangePayload. A payload too
// long or without a colon is ErrBadAuthChange; the caller should then drop every entry
// (InvalidateAuth(AuthChangeAll, "")) rather than keep a change it could not read.
func ParseAuthChange(payload string) (kind, id string, err error) {
	if len(payload) > MaxAuthChangeBytes {
		return "", "", ErrBadAuthChange
	}
	kind, id, ok := strings.Cut(payload, ":")
	if !ok || kind == "" {
		return "", "", ErrBadAuthChange
	}
	return kind, id, nil
}

// InvalidateAuth drops what this replica cached for a change another replica made: the
// entry point of the cross-replica broadcast (a LISTEN handler calls it with the payload's
// kind and id, see ParseAuthChange). An unknown kind drops every entry. It does not
// publish. Safe for concurrent use. Attacked by TestAuth_InvalidatorClearsEntry.
func (a *API) InvalidateAuth(kind, id string) { a.authCache.invalidate(kind, id) }

// authChanged clears this replica's entries for a change, then tells the other replicas.
// Handlers call it after the transaction that made the change, whether or not it
// committed: a needless invalidation costs one database read.
func (a *API) authChanged(kind, id string) {
	a.authCache.invalidate(kind, id)
	if a.publishAuth != nil {
		a.publishAuth(kind, id)
	}
}

// authCache is a bounded LRU of verified tokens and their principals. Safe for concurrent
// use.
type authCache struct {
	ttl time.Duration
	max int

	mu   sync.Mutex
	gen  uint64 // bumped by every invalidation
	byID map[auth.TokenID]*list.Element
	lru  list.List // of *authEntry, most recently used first
}

// authEntry is one verified token: its record (with the secret's hash and its expiry), the
// principal it authenticated as, and when the entry lapses.
type authEntry struct {
	tok   auth.Token
	p     *auth.Principal
	until time.Time
}

func newAuthCache(ttl time.Duration, max int) *authCache {
	return &authCache{ttl: ttl, max: max, byID: make(map[auth.TokenID]*list.Element)}
}

// generation is read before a database lookup and handed to put with its result.
func (c *authCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// get returns the live entry for id, dropping a lapsed one.
func (c *authCache) get(id auth.TokenID, now time.Time) (*authEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[id]
	if !ok {
		return nil, false
	}
	e := el.Value.(*authEntry)
	if !now.Before(e.until) {
		c.remove(el)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e, true
}

// put keeps a principal verified at now under generation gen, unless an invalidation came
// since: then what was read may already be stale.
func (c *authCache) put(gen uint64, tok auth.Token, p *auth.Principal, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	e := &authEntry{tok: tok, p: p, until: now.Add(c.ttl)}
	if el, ok := c.byID[tok.ID]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	for c.lru.Len() >= c.max {
		c.remove(c.lru.Back())
	}
	c.byID[tok.ID] = c.lru.PushFront(e)
}

func (c *authCache) remove(el *list.Element) {
	delete(c.byID, el.Value.(*authEntry).tok.ID)
	c.lru.Remove(el)
}

// invalidate drops the entries a change touches and fences off lookups in flight.
func (c *authCache) invalidate(kind, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	switch kind {
	case AuthChangeToken:
		if el, ok := c.byID[auth.TokenID(id)]; ok {
			c.remove(el)
		}
	case AuthChangeUser:
		// A scan: changes are rare and the cache is bounded.
		for el := c.lru.Front(); el != nil; {
			next := el.Next()
			if el.Value.(*authEntry).tok.UserID == auth.UserID(id) {
				c.remove(el)
			}
			el = next
		}
	default: // AuthChangeAll, and any kind this replica does not know: fail closed
		clear(c.byID)
		c.lru.Init()
	}
}

// len is the number of entries held.
func (c *authCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
