package fleet

import (
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/tenant"
)

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

// DeviceChangedLocal ends this replica's cached copies of the device's row and assignment
// (devcache.go, cache.go): another replica changed the device (an attestation).
func (s *Service) DeviceChangedLocal(id device.ID) { s.cache.changedDevice(id) }

// DevicesChangedAllLocal ends every cached device row and assignment here: device changes
// made through other replicas may have been missed. It wakes no waiting device.
func (s *Service) DevicesChangedAllLocal() { s.cache.changedAll() }

// deviceChanged ends the cached copies of the device's row here and on the other replicas:
// this replica changed it.
func (s *Service) deviceChanged(id device.ID) {
	s.cache.changedDevice(id)
	if s.cfg.BroadcastDevice != nil {
		s.cfg.BroadcastDevice(id)
	}
}
