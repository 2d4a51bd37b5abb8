package rules

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const kindsFile = `version: 1
product: DW100
metrics:
  drying_temp: {unit: Cel, label: drying temperature}
  rinse_agent: {unit: "%", label: rinse agent}
rules:
  - name: drying-too-hot
    kind: threshold
    when: "drying_temp > 85"
    clear_when: "drying_temp < 80"
    sustained: 5m
    actions: [{notify: owner}]
  - name: drying-rising-fast
    kind: rate
    metric: drying_temp
    phase: drying
    above: 10
    below: -10
  - name: no-data
    kind: missing
    after: 30m
  - name: rinse-agent-low
    kind: threshold
    when: "rinse_agent < 10"
    clear_when: "rinse_agent > 50"
`

// feed observes one DW100 sample a minute from start with the given drying temperatures,
// the clock following the samples.
func feed(e *Engine, c *clock, dev string, start time.Time, temps ...float64) []Transition {
	var out []Transition
	for i, v := range temps {
		at := start.Add(time.Duration(i) * time.Minute)
		c.now = at
		out = append(out, e.Observe([]Sample{{Device: dev, Product: "DW100", Time: at, Cycle: "c1", Phase: "drying",
			Readings: map[string]float64{"drying_temp": v, "rinse_agent": 70}}})...)
	}
	return out
}

func only(t *testing.T, ts []Transition, rule string) []Transition {
	t.Helper()
	var out []Transition
	for _, tr := range ts {
		if tr.Rule == rule {
			out = append(out, tr)
		} else {
			t.Errorf("unexpected transition %s %s: %s", tr.Change, tr.Rule, tr.Message)
		}
	}
	return out
}

// normalDrying is a drying phase a healthy DW100 shows: 60 to 70 °C, changing slowly.
func normalDrying(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = 65 + 3*float64(i%7-3)/3
	}
	return out
}

func TestEngine_NormalDataFiresNothing(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, mustParse(t, kindsFile))
	var all []Transition
	for day := range 3 {
		for cyc := range 4 {
			start := t0.Add(time.Duration(day)*24*time.Hour + time.Duration(cyc)*25*time.Minute)
			all = append(all, feed(e, c, "dw-01", start, normalDrying(24)...)...)
			all = append(all, e.Tick(start.Add(24*time.Minute))...)
		}
		c.now = t0.Add(time.Duration(day)*24*time.Hour + 2*time.Hour)
	}
	// Missing fires after each overnight gap; nothing else may.
	for _, tr := range all {
		if tr.Rule != "no-data" {
			t.Errorf("normal data: %s %s: %s", tr.Change, tr.Rule, tr.Message)
		}
	}
}

// TestThreshold_SustainedFiresOnce: above 85 °C must hold 5 minutes; it fires once, not
// again while it stays hot, and clears once below 80.
func TestThreshold_SustainedFiresOnce(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, mustParse(t, kindsFile))
	// 4 minutes hot, a dip, then 10 minutes hot: only the second stretch lasts 5m.
	temps := []float64{78, 86, 87, 88, 88, 84, 86, 87, 88, 89, 90, 91, 90, 89, 88, 87}
	ts := only(t, feed(e, c, "dw-01", t0, temps...), "drying-too-hot")
	if len(ts) != 1 || ts[0].Change != Fire {
		t.Fatalf("transitions:%s\nwant one fire", describeAll(ts))
	}
	if want := t0.Add(11 * time.Minute); !ts[0].At.Equal(want) {
		t.Errorf("fire at %s, want %s (5 minutes after the stretch began)", ts[0].At, want)
	}
	if got := ts[0].Message; got != "drying temperature 91.0 °C: drying_temp > 85 for 5m" {
		t.Errorf("message = %q", got)
	}
	if n := len(ts[0].Evidence); n != 6 {
		t.Errorf("evidence = %d samples, want the 6 of the stretch", n)
	}
	if len(ts[0].Actions) != 1 || ts[0].Actions[0].Name != "notify" {
		t.Errorf("actions = %v", ts[0].Actions)
	}
	// Between 80 and 85 stays open; below 80 clears once.
	ts = only(t, feed(e, c, "dw-01", t0.Add(20*time.Minute), 84, 82, 81, 79, 78, 70), "drying-too-hot")
	if len(ts) != 1 || ts[0].Change != Clear || ts[0].Value != 79 {
		t.Fatalf("transitions:%s\nwant one clear at 79", describeAll(ts))
	}
}

// TestThreshold_FlappingFiresOnce attacks the hysteresis: a level wavering around the
// threshold opens one alert, which closes only past clear_when.
func TestThreshold_FlappingFiresOnce(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, mustParse(t, kindsFile))
	var ts []Transition
	for i, level := range []float64{30, 12, 9, 11, 9.5, 10.5, 8, 12, 9, 20, 40, 49, 60, 55, 9, 8} {
		c.now = t0.Add(time.Duration(i) * time.Minute)
		ts = append(ts, e.Observe([]Sample{{Device: "dw-02", Product: "DW100", Time: c.now, Readings: map[string]float64{"rinse_agent": level}}})...)
	}
	if got := fmt.Sprint(changes(ts)); got != "[fire clear fire]" {
		t.Fatalf("changes = %s, want [fire clear fire] (fire at 9, clear at 60, fire at 9):%s", got, describeAll(ts))
	}
	if ts[0].Value != 9 || ts[1].Value != 60 || ts[2].Value != 9 {
		t.Errorf("values = %v %v %v, want 9 60 9", ts[0].Value, ts[1].Value, ts[2].Value)
	}
}

func changes(ts []Transition) []Change {
	var out []Change
	for _, t := range ts {
		out = append(out, t.Change)
	}
	return out
}

// TestRate_FiresOnce: a drying temperature jumping 15 °C in a minute fires once; steady
// change does not; the rate settling clears it.
func TestRate_FiresOnce(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, mustParse(t, kindsFile))
	ts := only(t, feed(e, c, "dw-03", t0, 60, 62, 64, 79, 81, 82, 82, 81), "drying-rising-fast")
	if got := fmt.Sprint(changes(ts)); got != "[fire clear]" {
		t.Fatalf("changes = %s, want [fire clear]:%s", got, describeAll(ts))
	}
	if ts[0].Value != 15 || ts[0].Message != "drying temperature changing +15.0 °C/min (above 10.0, below -10.0)" {
		t.Errorf("fire value %v, message %q", ts[0].Value, ts[0].Message)
	}
	if len(ts[0].Evidence) != 2 {
		t.Errorf("evidence = %d samples, want the pair", len(ts[0].Evidence))
	}
	// A pair split by a long gap, or by another phase, is no rate.
	c.now = t0.Add(time.Hour)
	ts = e.Observe([]Sample{{Device: "dw-03", Product: "DW100", Time: c.now, Cycle: "c1", Phase: "drying", Readings: map[string]float64{"drying_temp": 20}}})
	ts = append(ts, e.Observe([]Sample{{Device: "dw-03", Product: "DW100", Time: c.now.Add(time.Minute), Cycle: "c1", Phase: "wash", Readings: map[string]float64{"drying_temp": 90}}})...)
	ts = append(ts, e.Observe([]Sample{{Device: "dw-03", Product: "DW100", Time: c.now.Add(2 * time.Minute), Cycle: "c1", Phase: "drying", Readings: map[string]float64{"drying_temp": 20}}})...)
	if len(ts) != 0 {
		t.Fatalf("gap and phase change: transitions:%s\nwant none", describeAll(ts))
	}
}

// TestMissing_FiresAndClears: silence after a device was seen fires once; data clears it.
func TestMissing_FiresAndClears(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, mustParse(t, kindsFile))
	if ts := e.Tick(t0.Add(time.Hour)); len(ts) != 0 {
		t.Fatalf("never seen: Tick() = %s, want nothing", describeAll(ts))
	}
	feed(e, c, "dw-04", t0, 65, 66)
	if ts := e.Tick(t0.Add(30 * time.Minute)); len(ts) != 0 {
		t.Fatalf("29 minutes silent: Tick() = %s, want nothing", describeAll(ts))
	}
	ts := e.Tick(t0.Add(31 * time.Minute))
	if len(ts) != 1 || ts[0].Change != Fire || ts[0].Rule != "no-data" || ts[0].Device != "dw-04" {
		t.Fatalf("30 minutes silent: Tick() = %s, want one fire", describeAll(ts))
	}
	if !strings.HasPrefix(ts[0].Message, "no telemetry from dw-04 for 30m") || len(ts[0].Evidence) != 2 {
		t.Errorf("message %q, evidence %d (want the last samples)", ts[0].Message, len(ts[0].Evidence))
	}
	if ts := e.Tick(t0.Add(5 * time.Hour)); len(ts) != 0 {
		t.Fatalf("still silent: Tick() = %s, want nothing", describeAll(ts))
	}
	ts = only(t, feed(e, c, "dw-04", t0.Add(6*time.Hour), 65), "no-data")
	if len(ts) != 1 || ts[0].Change != Clear || !strings.Contains(ts[0].Message, "again after 5h59m") {
		t.Fatalf("data again: %s, want one clear", describeAll(ts))
	}
}

// TestEngine_RestoreDoesNotRefire: episodes open in the store before a restart do not
// fire again; they clear when the condition ends.
func TestEngine_RestoreDoesNotRefire(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, mustParse(t, kindsFile))
	ts := e.Restore([]Episode{
		{Product: "DW100", Device: "dw-05", Rule: "drying-too-hot", Since: t0.Add(-time.Hour)},
		{Product: "DW100", Device: "dw-05", Rule: "no-data", Since: t0.Add(-time.Hour)},
		{Product: "DW100", Device: "dw-05", Rule: "gone", Since: t0.Add(-time.Hour)},
		{Product: "XR7", Device: "xr-1", Rule: "no-data", Since: t0.Add(-time.Hour)},
	})
	if len(ts) != 2 || ts[0].Change != Clear || ts[0].Rule != "gone" || ts[1].Rule != "no-data" || ts[1].Product != "XR7" {
		t.Fatalf("Restore() = %s, want clears for the rule and product that are gone", describeAll(ts))
	}
	if ts := e.Tick(t0.Add(2 * time.Hour)); len(ts) != 0 {
		t.Fatalf("Tick() after restore = %s, want nothing", describeAll(ts))
	}
	ts = feed(e, c, "dw-05", t0.Add(3*time.Hour), 90, 91, 92, 93, 94, 95, 96, 97, 90, 84, 79)
	if got := fmt.Sprint(changes(ts)); got != "[clear clear]" || ts[0].Rule != "no-data" || ts[1].Rule != "drying-too-hot" {
		t.Fatalf("after restore: %s, want the missing alert cleared, no fire, then one clear at 79", describeAll(ts))
	}
}

// TestEngine_DeviceCapHolds: samples from more devices than MaxDevices do not grow the
// engine; they are counted.
func TestEngine_DeviceCapHolds(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, func(cfg *EngineConfig) { cfg.MaxDevices = 100 }, mustParse(t, kindsFile))
	for round := range 3 {
		for i := range 1000 {
			c.now = t0.Add(time.Duration(round) * time.Minute)
			e.Observe([]Sample{{Device: fmt.Sprintf("dev-%04d", i), Product: "DW100", Time: c.now, Cycle: "c", Phase: "drying",
				Readings: map[string]float64{"drying_temp": 65, "rinse_agent": 70}}})
		}
	}
	if s := e.Stats(); s.Devices != 100 || s.OverCap != 2700 || s.Samples != 300 {
		t.Fatalf("Stats() = %+v, want 100 devices, 2700 over the cap, 300 judged", s)
	}
	// Per device memory is bounded too: the evidence ring holds EvidenceSamples.
	feed(e, c, "dev-0001", t0.Add(time.Hour), normalDrying(500)...)
	if n := len(e.products["DW100"].devices["dev-0001"].ring); n != 20 {
		t.Fatalf("evidence ring = %d samples, want 20", n)
	}
}

// TestEngine_DropsUntrustedTimes: a device's clock may lie; far-future and out-of-order
// samples are dropped and counted, not judged.
func TestEngine_DropsUntrustedTimes(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, mustParse(t, kindsFile))
	s := func(at time.Time, v float64) Sample {
		return Sample{Device: "dw-06", Product: "DW100", Time: at, Readings: map[string]float64{"rinse_agent": v}}
	}
	ts := e.Observe([]Sample{
		s(t0.Add(time.Hour), 5),                  // far future
		s(t0, 70),                                // ok
		s(t0.Add(-time.Minute), 5),               // older than the last
		{Device: "", Product: "DW100", Time: t0}, // no device
		{Device: "x", Product: "other", Time: t0},
	})
	if len(ts) != 0 {
		t.Fatalf("Observe() = %s, want nothing", describeAll(ts))
	}
	if st := e.Stats(); st.Future != 1 || st.Late != 1 || st.Invalid != 1 || st.UnknownProduct != 1 || st.Samples != 1 {
		t.Fatalf("Stats() = %+v", st)
	}
}

func TestEngineConfig_Validate(t *testing.T) {
	t.Parallel()
	f := mustParse(t, kindsFile)
	cfg := EngineConfig{Files: []*File{f, f}, ForgetAfter: time.Minute}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, want := range []string{"now:", "logger:", "max_devices:", "max_fleet_devices:", "evidence_samples:", "a second file for product DW100", "forget_after:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %q", err, want)
		}
	}
}
