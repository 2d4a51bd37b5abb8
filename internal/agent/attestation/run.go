package attestation

import (
	"context"
	"math/rand/v2"
	"time"
)

// Retry delays after failed attestations.
const (
	minBackoff = time.Second
	maxBackoff = 5 * time.Minute
)

// Run keeps the device's certificate renewed until ctx is done, then returns nil. It
// attests at once if there is no certificate, then sleeps on a timer until the current
// certificate's renewal time (two thirds of its lifetime plus jitter, before it expires)
// or, after a failure, until the retry time of the capped exponential backoff, and attests
// again. It wakes early when a Certificate call has attested meanwhile, to sleep until the
// new renewal time. Failures are logged, not returned: callers of Certificate see them.
func (c *Client) Run(ctx context.Context) error {
	for {
		c.mu.Lock()
		wake := c.wakeLocked()
		changed := c.changed
		c.mu.Unlock()
		if d := wake.Sub(c.cfg.Now()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-changed:
				t.Stop()
				continue
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		// Certificate attests when the certificate is due or the retry time has come, and
		// records the outcome; the loop then sleeps until the next wake time.
		_, _ = c.Certificate(ctx)
	}
}

// Changed returns a channel that is closed after the next attestation attempt is recorded
// (a renewal, a refusal or a failure): a long-lived connection that presents the
// certificate (the cloud link, internal/agent/cloudlink) calls Certificate then and
// reconnects when the certificate is a new one.
func (c *Client) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// wakeLocked returns when Run should next call Certificate.
func (c *Client) wakeLocked() time.Time {
	var at time.Time // zero: now
	if c.cur != nil {
		at = c.cur.renewAt
	}
	if c.failures > 0 && c.retryAt.After(at) {
		at = c.retryAt
	}
	return at
}

// renewAt returns a certificate's renewal time: two thirds of its lifetime from start
// (the later of NotBefore and its receipt) plus a random jitter of up to 1/50 of the
// lifetime, so always before notAfter.
func renewAt(start, notAfter time.Time) time.Time {
	life := notAfter.Sub(start)
	if life <= 0 {
		return start
	}
	at := start.Add(life / 3 * 2)
	if j := int64(life / 50); j > 0 {
		at = at.Add(time.Duration(rand.Int64N(j))) //nolint:gosec // G404: jitter to spread renewals, not a secret
	}
	return at
}

// backoff returns the delay after the n-th consecutive failure (n >= 1): minBackoff
// doubling up to maxBackoff, drawn at random from the upper half of that.
func backoff(n int) time.Duration {
	d := maxBackoff
	if n < 20 { // past that, the shift would only exceed the cap
		d = min(minBackoff<<(max(n, 1)-1), maxBackoff)
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) //nolint:gosec // G404: jitter to spread retries, not a secret
}
