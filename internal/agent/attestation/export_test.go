package attestation

import "time"

// Test seams: the schedule functions, and the outcome of attempts a test cannot otherwise
// wait for without polling.
var (
	RenewAt = renewAt
	Backoff = backoff
)

const (
	MinBackoff = minBackoff
	MaxBackoff = maxBackoff
)

// Attempted returns a channel that is closed once the next attestation's outcome (success,
// refusal or failure) is recorded.
func Attempted(c *Client) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Failures returns the number of consecutive failed attestations and the retry time.
func Failures(c *Client) (int, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failures, c.retryAt
}

// Accept runs the checks of an issued chain at now and returns the PEM that would be stored.
func Accept(c *Client, chainPEM []byte, now time.Time) ([]byte, error) {
	_, out, err := c.accept(chainPEM, now)
	return out, err
}
