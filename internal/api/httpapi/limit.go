package httpapi

import (
	"net/http"
	"strconv"

	"github.com/moat-iot/moat/internal/problem"
)

// RetryAfterSeconds is what a request refused for capacity is told to wait.
const RetryAfterSeconds = 2

// Limiter caps the requests served at once. A request past the cap is refused at once
// (503, Retry-After) rather than queued, so that waiting strangers hold no memory. Safe for
// concurrent use.
type Limiter struct {
	slots chan struct{}
}

// NewLimiter returns a limiter of n slots (n > 0).
func NewLimiter(n int) *Limiter { return &Limiter{slots: make(chan struct{}, n)} }

// Cap is the number of slots.
func (l *Limiter) Cap() int { return cap(l.slots) }

// Acquire takes a slot and returns the function that gives it back, or, with every slot
// taken, sets Retry-After in h and returns an Unavailable problem.
func (l *Limiter) Acquire(h http.Header) (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
		return l.release, nil
	default:
		h.Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
		return nil, problem.New(problem.Unavailable, "server_busy", "the server is serving as many unauthenticated requests as it allows; retry after %d seconds", RetryAfterSeconds)
	}
}

func (l *Limiter) release() { <-l.slots }
