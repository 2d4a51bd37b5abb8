package rules

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2026, 7, 1, 8, 0, 0, 0, time.UTC)

// clock is the engine's injected clock.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func testActions() Actions { return StandardActions() }

func mustParse(t testing.TB, src string) *File {
	t.Helper()
	f, err := Parse([]byte(src), "test.yaml", testActions())
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	return f
}

func exampleFile(t testing.TB) *File {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "dw100", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(data, "examples/dw100/rules.yaml", StandardActions())
	if err != nil {
		t.Fatalf("Parse(examples/dw100/rules.yaml) = %v", err)
	}
	return f
}

func newTestEngine(t testing.TB, c *clock, mod func(*EngineConfig), files ...*File) *Engine {
	t.Helper()
	cfg := DefaultEngineConfig()
	cfg.Files, cfg.Now, cfg.Logger = files, c.Now, slog.New(slog.DiscardHandler)
	if mod != nil {
		mod(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// dw100 simulates DW100 wash cycles: wash (water temperature), rinse, then drying (drying
// temperature), one sample a minute, with a per-device bias and bounded noise.
type dw100 struct {
	id        string
	bias      float64
	dryOffset float64 // a failing heater: a large negative offset
	rinse     float64
	cycle     int
	rng       *rand.Rand
}

func newFleetSim(n int, seed uint64) []*dw100 {
	rng := rand.New(rand.NewPCG(seed, 1))
	ds := make([]*dw100, n)
	for i := range ds {
		ds[i] = &dw100{id: fmt.Sprintf("dw-%02d", i), bias: rng.Float64()*2 - 1, rinse: 60 + rng.Float64()*30,
			rng: rand.New(rand.NewPCG(seed, uint64(i)+2))}
	}
	return ds
}

// run returns one cycle's samples starting at start; ambient shifts every temperature.
func (d *dw100) run(start time.Time, ambient float64) []Sample {
	d.cycle++
	cyc := fmt.Sprintf("c%d", d.cycle)
	noise := func() float64 { return d.rng.Float64()*1.0 - 0.5 }
	var out []Sample
	at := start
	add := func(phase string, r map[string]float64) {
		out = append(out, Sample{Device: d.id, Product: "DW100", Time: at, Cycle: cyc, Phase: phase, Readings: r})
		at = at.Add(time.Minute)
	}
	for range 8 {
		add("wash", map[string]float64{"water_temp": 55 + ambient/2 + d.bias + noise(), "rinse_agent": d.rinse})
	}
	for range 4 {
		add("rinse", map[string]float64{"water_temp": 45 + ambient/2 + d.bias + noise(), "rinse_agent": d.rinse})
	}
	for range 10 {
		add("drying", map[string]float64{"drying_temp": 65 + ambient + d.bias + d.dryOffset + noise(), "rinse_agent": d.rinse})
	}
	return out
}

func describeAll(ts []Transition) string {
	s := ""
	for _, t := range ts {
		s += fmt.Sprintf("\n  %s %s %s at %s: %s", t.Change, t.Rule, t.Device, t.At.Format(time.RFC3339), t.Message)
	}
	return s
}

func slicesSort(xs []uint64) {
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && xs[j] < xs[j-1]; j-- {
			xs[j], xs[j-1] = xs[j-1], xs[j]
		}
	}
}
