package fleet

import "github.com/moat-iot/moat/internal/tenant"

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
