package sim_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/sim"
)

// TestSim_MemoryPerDevice reports the heap and goroutines that waiting devices hold. The
// server runs in the same process, so the figure covers both ends of each device's
// connection; `scripts/load.sh` measures the simulator's process alone (docs/sim.md). It
// asserts nothing about time, only that nothing leaks per device beyond a generous bound.
func TestSim_MemoryPerDevice(t *testing.T) {
	t.Parallel()
	const n = 100
	f := newFleet(t)
	s, err := sim.New(f.config(t, n))
	if err != nil {
		t.Fatal(err)
	}
	before, goBefore := heap(), runtime.NumGoroutine()
	start(t, s)
	waitFor(t, s, 5*time.Minute, "all waiting", func(st sim.Stats) bool { return st.Waiting == n })
	after, goAfter := heap(), runtime.NumGoroutine()
	perDevice := (int64(after) - int64(before)) / n
	t.Logf("%d waiting devices: %d bytes of heap and %.1f goroutines per device (simulator and server together)",
		n, perDevice, float64(goAfter-goBefore)/n)
	if perDevice > 1<<20 {
		t.Errorf("%d bytes of heap per waiting device, want well under 1 MiB", perDevice)
	}
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
