package fleet

import "github.com/moat-iot/moat/internal/tenant"

// Replicas: Notify wakes this replica's waiting devices and tells Config.Broadcast, which
// carries the change to the other replicas; there it arrives as WakeLocal (or, when
// notifications may have been lost, WakeAllLocal). Neither broadcasts again, so an event
// never loops. Attacked by internal/server's TestReplicas_WakeAcrossReplicas.

// WakeLocal wakes the tenant's devices waiting on this replica only, and ends the tenant's
// cached assignments here (cache.go): a change made through another replica.
func (s *Service) WakeLocal(t tenant.ID) { s.cache.changed(t); s.waits.Notify(t) }

// WakeAllLocal wakes every device waiting on this replica and ends every cached
// assignment here: changes made through other replicas may have been missed.
func (s *Service) WakeAllLocal() { s.cache.changedAll(); s.waits.NotifyAll() }

// broadcast hands the tenant's change to the other replicas, if any.
func (s *Service) broadcast(t tenant.ID) {
	if s.cfg.Broadcast != nil {
		s.cfg.Broadcast(t)
	}
}
