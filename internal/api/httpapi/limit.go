package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/moat-iot/moat/internal/problem"
)

// RetryAfterSeconds is what a request refused for capacity is told to wait.
const RetryAfterSeconds = 2

// Limiter caps the requests served at once. Past the cap a request waits in a bounded queue
// for at most the limiter's wait (NewQueuedLimiter), and is refused (503, Retry-After) when
// the queue is full or the wait ends, so that waiting strangers hold bounded memory. Safe
// for concurrent use.
//
// Why a queue: issue 15's reconnect storm (every device of a fleet attesting at once) was
// served at a twentieth of the attestation rate with refusals only. The server finished
// the 256 requests it admitted in a fraction of a second, then idled while the thousands it
// had refused waited out Retry-After (TestLimiter_QueuedRequestIsServedWhenASlotFrees).
type Limiter struct {
	slots   chan struct{}
	waiters chan struct{} // nil: no queue
	wait    time.Duration
}

// NewLimiter returns a limiter of n slots (n > 0) that refuses at once past them.
func NewLimiter(n int) *Limiter { return &Limiter{slots: make(chan struct{}, n)} }

// NewQueuedLimiter returns a limiter of n slots (n > 0) past which up to waiters requests
// wait for a slot, each for at most wait.
func NewQueuedLimiter(n, waiters int, wait time.Duration) *Limiter {
	return &Limiter{slots: make(chan struct{}, n), waiters: make(chan struct{}, waiters), wait: wait}
}

// Cap is the number of slots.
func (l *Limiter) Cap() int { return cap(l.slots) }

// Acquire takes a slot and returns the function that gives it back. With every slot taken
// it waits in the queue, if the limiter has one with room, until a slot frees, its wait
// ends or ctx does; refused, it sets Retry-After in h and returns an Unavailable problem.
func (l *Limiter) Acquire(ctx context.Context, h http.Header) (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
		return l.release, nil
	default:
	}
	if l.waiters != nil {
		select {
		case l.waiters <- struct{}{}:
			defer func() { <-l.waiters }()
			t := time.NewTimer(l.wait)
			defer t.Stop()
			select {
			case l.slots <- struct{}{}:
				return l.release, nil
			case <-t.C:
			case <-ctx.Done():
			}
		default: // the queue is full
		}
	}
	h.Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	return nil, problem.New(problem.Unavailable, "server_busy", "the server is serving as many unauthenticated requests as it allows; retry after %d seconds", RetryAfterSeconds)
}

func (l *Limiter) release() { <-l.slots }
