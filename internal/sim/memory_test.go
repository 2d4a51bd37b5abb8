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

// TestSim_MemoryPerDeviceWithCloud is TestSim_MemoryPerDevice with a cloud: each waiting
// device also holds its MQTT session and publishes telemetry. The broker and the cloud run
// in the process too, so the figure covers both ends of both connections.
func TestSim_MemoryPerDeviceWithCloud(t *testing.T) {
	t.Parallel()
	const n = 100
	f, e := newCloudFleet(t)
	cfg := f.config(t, n)
	cfg.Cloud = cloudConfig(t, e)
	cfg.Cloud.Interval = 10 * time.Second
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	before, goBefore, stackBefore := heap(), runtime.NumGoroutine(), stacks()
	start(t, s)
	waitFor(t, s, 5*time.Minute, "all waiting and connected to the cloud", func(st sim.Stats) bool {
		return st.Waiting == n && st.Cloud.Connected == n && st.Cloud.TelemetrySent >= n
	})
	after, goAfter, stackAfter := heap(), runtime.NumGoroutine(), stacks()
	perDevice := (int64(after) - int64(before)) / n
	t.Logf("%d waiting devices with a cloud: %d bytes of heap, %d of goroutine stacks and %.1f goroutines per device (simulator, server, broker and cloud together)",
		n, perDevice, (int64(stackAfter)-int64(stackBefore))/n, float64(goAfter-goBefore)/n)
	if perDevice > 1<<20 {
		t.Errorf("%d bytes of heap per waiting device, want well under 1 MiB", perDevice)
	}
}

func stacks() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.StackInuse
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
