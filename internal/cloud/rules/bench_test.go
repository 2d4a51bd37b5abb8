package rules

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkObserve judges DW100 wash cycles from a 10,000-device fleet with the example
// rules, in batches of 100 samples, and reports samples/s. Its baseline, measured in the
// same run, is a loop that only copies the samples' readings into a map (what any
// consumer of the samples pays), reported as the ratio observe_ns/baseline_ns.
func BenchmarkObserve(b *testing.B) {
	const devices, batch = 10_000, 100
	c := &clock{now: t0}
	file := exampleFile(b)
	sims := newFleetSim(devices, 9)
	// One cycle per device, interleaved as a broker would deliver them.
	cycles := make([][]Sample, devices)
	for i, d := range sims {
		d.id = fmt.Sprintf("dw-%05d", i)
		cycles[i] = d.run(t0, 0)
	}
	var samples []Sample
	for k := range len(cycles[0]) {
		for i := range cycles {
			samples = append(samples, cycles[i][k])
		}
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e := newTestEngine(b, c, nil, file)
	// Warm up: every device seen, the fleet full, so the loop measures the steady state.
	c.now = t0.Add(30 * time.Minute)
	for i := 0; i < len(samples); i += batch {
		e.Observe(samples[i : i+batch])
	}
	e.Tick(t0.Add(50 * time.Minute))
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)

	sink := map[string]float64{}
	startBase := time.Now()
	for _, s := range samples {
		for k, v := range s.Readings {
			sink[k] = v
		}
	}
	base := time.Since(startBase)

	n, round := 0, 1
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if n+batch > len(samples) {
			// The next cycle of every device, an hour later.
			shift := time.Duration(round) * time.Hour
			for i := range samples {
				samples[i].Time = samples[i].Time.Add(time.Hour)
				samples[i].Cycle = fmt.Sprintf("c%d", round+1)
			}
			c.now = t0.Add(shift + 30*time.Minute)
			n, round = 0, round+1
		}
		e.Observe(samples[n : n+batch])
		n += batch
	}
	elapsed := time.Since(start)
	b.StopTimer()
	perSample := float64(elapsed.Nanoseconds()) / float64(b.N*batch)
	b.ReportMetric(1e9/perSample, "samples/s")
	b.ReportMetric(perSample/(float64(base.Nanoseconds())/float64(len(samples))), "observe/baseline")
	if s := e.Stats(); s.Devices != devices {
		b.Fatalf("Stats() = %+v, want %d devices", s, devices)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/devices, "heap_bytes/device")
}
