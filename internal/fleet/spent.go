package fleet

import (
	"sync"
	"time"
)

// maxSpent bounds the replica's in-memory set of spent nonces: about 16 MiB, two minutes
// (the nonce TTL) of 1,000 attestations a second.
const maxSpent = 1 << 17

// spentSet is the replica's memory of the nonces spent, or being spent, through it, in
// front of the durable record (store.Nonces.Spend). It turns a replay away without a
// write, and of several copies of one evidence sent at once it lets exactly one through
// to the store (TestNonce_SingleUseUnderConcurrency). It decides nothing alone: a nonce it
// has not seen (spent on another replica, before a restart, or past its bound) goes to the
// durable check, whose uniqueness decides (TestNonce_SingleUseAcrossRestart). Entries
// leave when their nonce expires, after which the nonce is refused as expired anyway.
// Safe for concurrent use.
type spentSet struct {
	mu        sync.Mutex
	m         map[string]spentEntry
	max       int
	nextSweep time.Time
}

type spentEntry struct {
	expires time.Time
	// replayNoted: one replay of this nonce was recorded on the device; later ones are
	// only counted, so a captured evidence replayed in a loop costs no write each.
	replayNoted bool
}

func newSpentSet(limit int) *spentSet { return &spentSet{m: map[string]spentEntry{}, max: limit} }

// reserve claims the nonce. fresh: it was not known, and is now claimed by the caller
// (who must release it if its write fails). Otherwise note reports whether this replay
// is the first one, to be recorded.
func (s *spentSet) reserve(nonce string, expires, now time.Time) (fresh, note bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[nonce]; ok {
		if !e.expires.After(now) {
			delete(s.m, nonce)
			return true, false // expired: the nonce check refuses it first; defensive
		}
		note = !e.replayNoted
		e.replayNoted = true
		s.m[nonce] = e
		return false, note
	}
	if len(s.m) >= s.max && !now.Before(s.nextSweep) {
		for k, e := range s.m {
			if !e.expires.After(now) {
				delete(s.m, k)
			}
		}
		s.nextSweep = now.Add(time.Second)
	}
	if len(s.m) < s.max {
		s.m[nonce] = spentEntry{expires: expires}
	}
	return true, false
}

// release forgets a nonce whose write did not happen, so that it may still be spent.
func (s *spentSet) release(nonce string) {
	s.mu.Lock()
	delete(s.m, nonce)
	s.mu.Unlock()
}

func (s *spentSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
