package ingest

import (
	"sync"
	"time"
)

// limiter is a token bucket per device over broker arrival times (JetStream timestamps):
// a backlog the ingest catches up on after an outage arrived at its real pace and passes,
// while a flood is judged by the pace the device published at. At most max devices are
// tracked; when full, buckets that refilled completely are forgotten first (forgetting
// one is the same as keeping it), then arbitrary ones.
type limiter struct {
	rate, burst float64
	max         int

	mu      sync.Mutex
	buckets map[string]bucket
	saved   map[string]*bucket // the batch's prior states, for undo; nil entry: was absent
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst, max int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), max: max, buckets: map[string]bucket{}}
}

// begin starts a batch; the returned undo restores the state from before it.
func (l *limiter) begin() (undo func()) {
	l.mu.Lock()
	l.saved = map[string]*bucket{}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for dev, b := range l.saved {
			if b == nil {
				delete(l.buckets, dev)
			} else {
				l.buckets[dev] = *b
			}
		}
		l.saved = nil
	}
}

// allow takes a token of device's bucket at time at, if it has one.
func (l *limiter) allow(device string, at time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[device]
	if l.saved != nil {
		if _, seen := l.saved[device]; !seen {
			if ok {
				prev := b
				l.saved[device] = &prev
			} else {
				l.saved[device] = nil
			}
		}
	}
	if !ok {
		l.makeRoom(at)
		b = bucket{tokens: l.burst, last: at}
	}
	if at.After(b.last) { // arrival times may repeat or step back across redeliveries
		b.tokens = min(l.burst, b.tokens+at.Sub(b.last).Seconds()*l.rate)
		b.last = at
	}
	allowed := b.tokens >= 1
	if allowed {
		b.tokens--
	}
	l.buckets[device] = b
	return allowed
}

// makeRoom evicts buckets while the map is full.
func (l *limiter) makeRoom(at time.Time) {
	if len(l.buckets) < l.max {
		return
	}
	for dev, b := range l.buckets {
		if b.tokens+at.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, dev)
		}
	}
	// Still full: evict about 1% at random, so a stream of new devices costs one sweep per
	// hundredth of the map, not one per device.
	for dev := range l.buckets {
		if len(l.buckets) < l.max-l.max/100 {
			break
		}
		delete(l.buckets, dev)
	}
}

func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// logLimiter lets one log line per key through every period and counts the rest.
type logLimiter struct {
	every      time.Duration
	mu         sync.Mutex
	last       map[string]time.Time // keys: drop reasons, a fixed set
	suppressed map[string]int
}

func (l *logLimiter) allow(key string, now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, seen := l.last[key]; seen && now.Sub(last) < l.every {
		l.suppressed[key]++
		return 0, false
	}
	n := l.suppressed[key]
	l.last[key], l.suppressed[key] = now, 0
	return n, true
}
