package fleet

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Sizes of the service's caches and wait tables, for the tests that attack their bounds
// (compiled into tests only, never into a shipped binary).

// TrustCacheLen is the number of tenants whose CAs the service has cached.
func TrustCacheLen(s *Service) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.trust)
}

// UntrustedCacheLen is the number of tenant IDs remembered as having no trusted CA.
func UntrustedCacheLen(s *Service) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.untrusted)
}

// VerifiedCacheLen is the number of certificate chains remembered as verified.
func VerifiedCacheLen(s *Service) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.verified)
}

// Waiters is the number of devices waiting for updates on the service.
func Waiters(s *Service) int { return s.waits.Len() }

// Armed reports whether a device of the tenant waits for a wake-up on the service.
func Armed(s *Service, t tenant.ID) bool { return s.waits.Armed(t) }

// MaxUntrusted is the bound of the negative trust cache.
const MaxUntrusted = maxUntrusted

// Committer is the group commit of attestation writes, for the tests that attack it.
type Committer = committer

// Ticket is a committer's announcement of a write on its way.
type Ticket = ticket

// NewCommitter returns a group commit over st.
func NewCommitter(st store.Store, maxQueue, maxBatch int, maxWait time.Duration) *Committer {
	return newCommitter(st, maxQueue, maxBatch, maxWait)
}

// Announce announces a write (committer.announce).
func (c *committer) Announce() *Ticket { return c.announce() }

// Do queues a write (committer.do).
func (c *committer) Do(ctx context.Context, t *Ticket, fn func(context.Context, store.Tx) error) error {
	return c.do(ctx, t, fn)
}

// Queued is the number of writes waiting in the committer's queue.
func (c *committer) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// QueuedAttestations is the number of attestation writes waiting in the service's queue.
func QueuedAttestations(s *Service) int { return s.commits.Queued() }

// SpentLen is the number of nonces in the service's in-memory spent set.
func SpentLen(s *Service) int { return s.spent.len() }
