package push

// NotifyAll wakes every device waiting on this replica, of every tenant: for when changes
// may have been missed (the replica's LISTEN connection to the other replicas was lost,
// internal/store/postgres/notify). The woken spread their re-checks by the number of all
// waiters, so the wake-up is bounded as one tenant's is (at most maxWakeSpread).
// Attacked by TestNotifyAll_WakesEveryTenant.
func (n *Waits) NotifyAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	total := len(n.byDevice)
	for _, set := range n.byTenant {
		n.metrics.wakeups.Inc()
		n.wakeLocked(set, total)
	}
}
