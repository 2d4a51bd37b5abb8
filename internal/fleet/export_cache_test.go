package fleet

// AssignmentCacheLen is the number of devices whose assignment the service remembers
// (compiled into tests only).
func AssignmentCacheLen(s *Service) int { return s.cache.len() }

// InputsMemoMaxAge is inputsMemoMaxAge (memo.go).
const InputsMemoMaxAge = inputsMemoMaxAge
