package sim

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/client"
)

// Backoff after failures: minBackoff doubling to maxBackoff, each wait drawn from the
// upper half at random, so that devices failed together do not retry together. A
// Retry-After is honoured: the wait is at least what it asked for, plus up to half again.
const (
	minBackoff = time.Second
	maxBackoff = time.Minute
)

// errRetryNow asks retry to try again at once (a stale version read again).
var errRetryNow = errors.New("retry now")

// backoff returns the wait after the n-th consecutive failure (n >= 1) that ended with err.
func backoff(n int, err error) time.Duration {
	if ce, ok := errors.AsType[*client.Error](err); ok && ce.RetryAfter > 0 {
		return ce.RetryAfter + time.Duration(rand.Int64N(int64(ce.RetryAfter/2)+1)) //nolint:gosec // G404: jitter, not a secret
	}
	d := maxBackoff
	if n < 8 {
		d = min(minBackoff<<(max(n, 1)-1), maxBackoff)
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) //nolint:gosec // G404: jitter, not a secret
}

// unavailable reports whether err is the server saying it is busy (503, or 429).
func unavailable(err error) bool {
	if ce, ok := errors.AsType[*client.Error](err); ok {
		return ce.Status == http.StatusServiceUnavailable || ce.Status == http.StatusTooManyRequests
	}
	if he, ok := errors.AsType[*metadata.ErrDownloadHTTP](err); ok {
		return he.StatusCode == http.StatusServiceUnavailable || he.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// transient reports whether a management call that failed with err may succeed later: the
// server was busy or failed inside, or the request never got an answer.
func transient(err error) bool {
	if ce, ok := errors.AsType[*client.Error](err); ok {
		return ce.Status >= 500 || ce.Status == http.StatusTooManyRequests
	}
	return err != nil && !errors.Is(err, context.Canceled)
}

// retry calls fn until it succeeds, fails for good, or ctx ends; passing failures wait
// for backoff.
func retry(ctx context.Context, s *Sim, fn func() error) error {
	for n := 1; ; n++ {
		err := fn()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errRetryNow):
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !transient(err):
			return err
		}
		s.retries.Add(1)
		if unavailable(err) {
			s.unavailable.Add(1)
		}
		if !sleep(ctx, backoff(n, err)) {
			return ctx.Err()
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
