package owners

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// limiter slows guessing: each key (a client address, an owner) has a bucket of burst
// failures that refills one every refill. A key whose bucket is empty is refused until
// it refills. Only failures take from the bucket, so an owner who types well is never
// slowed. The map holds at most max keys; past that the least recently used is
// forgotten (a forgotten key starts again with a full bucket: an attacker with many
// addresses can push keys out, which is why accounts have their own lock, kept in the
// store). Safe for concurrent use.
type limiter struct {
	mu     sync.Mutex
	burst  float64
	refill time.Duration
	max    int
	keys   map[string]*list.Element
	lru    *list.List // of *bucket, most recent at the front
}

type bucket struct {
	key    string
	tokens float64
	at     time.Time
}

func newLimiter(burst int, refill time.Duration, max int) *limiter {
	return &limiter{burst: float64(burst), refill: refill, max: max, keys: map[string]*list.Element{}, lru: list.New()}
}

// level returns key's bucket refilled to now (nil when the key is not tracked).
func (l *limiter) level(key string, now time.Time) *bucket {
	e, ok := l.keys[key]
	if !ok {
		return nil
	}
	b := e.Value.(*bucket)
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.refill))
		b.at = now
	}
	l.lru.MoveToFront(e)
	return b
}

// allow reports whether key may try now, and if not, how long until it may.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.level(key, now)
	if b == nil || b.tokens >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(l.refill))
}

// fail takes one token from key's bucket.
func (l *limiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.level(key, now)
	if b == nil {
		for l.lru.Len() >= l.max {
			old := l.lru.Back()
			delete(l.keys, old.Value.(*bucket).key)
			l.lru.Remove(old)
		}
		b = &bucket{key: key, tokens: l.burst, at: now}
		l.keys[key] = l.lru.PushFront(b)
	}
	b.tokens = max(0, b.tokens-1)
}

// size is the number of keys tracked.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// clientKey is the limiter key of a client address ("host:port" or a bare host): the
// address itself for IPv4, its /64 for IPv6 (one subscriber's whole prefix), and the
// string as given when it does not parse.
func clientKey(remoteAddr string) string {
	ap, err := netip.ParseAddrPort(remoteAddr)
	a := ap.Addr()
	if err != nil {
		if a, err = netip.ParseAddr(remoteAddr); err != nil {
			return "addr:" + remoteAddr
		}
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return "addr:" + p.String()
	}
	return "addr:" + a.String()
}

// phantomLocks gives addresses that have no account the same lock an account gets
// (lockUntil after LockAfter wrong passwords, doubling), so that "locked" does not tell a
// guesser which addresses have accounts. It holds at most max addresses, forgetting the
// least recently used (to push one out, a guesser needs max sign-ins, which the per-address
// limiter slows). Safe for concurrent use.
type phantomLocks struct {
	mu   sync.Mutex
	max  int
	keys map[string]*list.Element
	lru  *list.List // of *phantom, most recent at the front
}

type phantom struct {
	email    string
	failures int
	until    time.Time
}

func newPhantomLocks(max int) *phantomLocks {
	return &phantomLocks{max: max, keys: map[string]*list.Element{}, lru: list.New()}
}

// lockedUntil returns when the lock of email ends (zero: not locked at now).
func (p *phantomLocks) lockedUntil(email string, now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.keys[email]; ok {
		if ph := e.Value.(*phantom); ph.until.After(now) {
			return ph.until
		}
	}
	return time.Time{}
}

// fail counts a wrong password for email and sets its lock as an account's would be.
func (p *phantomLocks) fail(email string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.keys[email]
	if !ok {
		for p.lru.Len() >= p.max {
			old := p.lru.Back()
			delete(p.keys, old.Value.(*phantom).email)
			p.lru.Remove(old)
		}
		e = p.lru.PushFront(&phantom{email: email})
		p.keys[email] = e
	}
	p.lru.MoveToFront(e)
	ph := e.Value.(*phantom)
	ph.failures++
	ph.until = lockUntil(ph.failures, now)
}

// size is the number of addresses tracked.
func (p *phantomLocks) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}
