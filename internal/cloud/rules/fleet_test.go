package rules

import (
	"math"
	"strings"
	"testing"
	"time"
)

// fleetScenario runs rounds of one wash cycle per device, an hour apart, with the example
// rules, and returns every transition. ambient(round) warms every device; offset(round,
// device) is a device's own fault.
func fleetScenario(t *testing.T, e *Engine, c *clock, ds []*dw100, rounds int,
	ambient func(r int) float64, offset func(r int, d *dw100) float64,
) []Transition {
	t.Helper()
	var all []Transition
	for r := range rounds {
		start := t0.Add(time.Duration(r) * time.Hour)
		c.now = start.Add(22 * time.Minute)
		for _, d := range ds {
			d.dryOffset = offset(r, d)
			all = append(all, e.Observe(d.run(start, ambient(r)))...)
		}
		c.now = start.Add(40 * time.Minute)
		all = append(all, e.Tick(c.now)...) // closes the drying segments
	}
	return all
}

func noFault(int, *dw100) float64 { return 0 }

// summer warms every DW100 by 8 °C at once from round 10.
func summer(r int) float64 {
	if r >= 10 {
		return 8
	}
	return 0
}

// TestFleet_SummerDoesNotFire: when every DW100 runs 8 °C hotter, the fleet median moves
// with them and the fleet-relative rule fires nothing (a fixed baseline would fire 50
// times).
func TestFleet_SummerDoesNotFire(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, exampleFile(t))
	ts := fleetScenario(t, e, c, newFleetSim(50, 1), 30, summer, noFault)
	if len(ts) != 0 {
		t.Fatalf("a summer for the whole fleet: transitions = %d, want 0:%s", len(ts), describeAll(ts))
	}
	if s := e.Stats(); s.FleetDevices != 50 || s.Devices != 50 {
		t.Errorf("Stats() = %+v, want 50 devices in the fleet", s)
	}
}

// TestFleet_FailingHeaterFiresOnce: in the same summer, one heater fails at round 15 and
// is repaired at round 25: exactly one Fire (after two cycles) and one Clear, for that
// device, with its evidence and the diagnostics action.
func TestFleet_FailingHeaterFiresOnce(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, exampleFile(t))
	failing := func(r int, d *dw100) float64 {
		if d.id == "dw-07" && r >= 15 && r < 25 {
			return -27
		}
		return 0
	}
	ts := fleetScenario(t, e, c, newFleetSim(50, 2), 35, summer, failing)
	if len(ts) != 2 {
		t.Fatalf("transitions = %d, want 2 (fire, clear):%s", len(ts), describeAll(ts))
	}
	fire, clr := ts[0], ts[1]
	if fire.Change != Fire || fire.Rule != "heater-drying-anomaly" || fire.Device != "dw-07" || clr.Change != Clear || clr.Device != "dw-07" {
		t.Fatalf("transitions:%s\nwant fire then clear of heater-drying-anomaly for dw-07", describeAll(ts))
	}
	// Fired on the second failing cycle (round 16), cleared on the first repaired one.
	if want := t0.Add(16*time.Hour + 21*time.Minute); !fire.At.Equal(want) {
		t.Errorf("fire at %s, want %s (second failing cycle)", fire.At, want)
	}
	if want := t0.Add(25*time.Hour + 21*time.Minute); !clr.At.Equal(want) {
		t.Errorf("clear at %s, want %s", clr.At, want)
	}
	if !strings.Contains(fire.Message, "drying temperature") || !strings.Contains(fire.Message, "°C is unusual for DW100: fleet median 7") ||
		!strings.Contains(fire.Message, "z = -") {
		t.Errorf("fire message = %q", fire.Message)
	}
	if math.Abs(fire.Value-(65+8-27)) > 2 {
		t.Errorf("fire value = %.1f, want about 46 (the failing cycle's drying mean)", fire.Value)
	}
	if len(fire.Actions) != 4 || fire.Actions[0] != (Action{Name: "diagnostics", Arg: "heater-self-test"}) ||
		fire.Actions[3] != (Action{Name: "reserve-part", Arg: "DW100-HTR-2"}) {
		t.Errorf("fire actions = %v", fire.Actions)
	}
	if len(clr.Actions) != 0 {
		t.Errorf("clear actions = %v, want none", clr.Actions)
	}
	if n := len(fire.Evidence); n == 0 || n > 20 {
		t.Fatalf("fire evidence = %d samples, want 1 to 20", n)
	}
	for _, s := range fire.Evidence {
		if s.Phase != "drying" || s.Device != "dw-07" || s.Readings["drying_temp"] > 55 {
			t.Errorf("evidence sample %+v: want dw-07's failing drying readings", s)
		}
	}
}

// TestFleet_SmallFleetNotJudged: below min_devices nothing is judged, however odd.
func TestFleet_SmallFleetNotJudged(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, exampleFile(t))
	failing := func(r int, d *dw100) float64 {
		if d.id == "dw-03" {
			return -30
		}
		return 0
	}
	if ts := fleetScenario(t, e, c, newFleetSim(9, 3), 10, summer, failing); len(ts) != 0 {
		t.Fatalf("a fleet of 9 (min_devices 10): transitions = %d, want 0:%s", len(ts), describeAll(ts))
	}
}

// TestFleet_RestoreDoesNotRefire: after a restart the store hands back dw-07's open
// alert; the failing heater does not fire again, and the repair clears it once.
func TestFleet_RestoreDoesNotRefire(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, nil, exampleFile(t))
	if ts := e.Restore([]Episode{{Product: "DW100", Device: "dw-07", Rule: "heater-drying-anomaly", Since: t0.Add(-time.Hour)}}); len(ts) != 0 {
		t.Fatalf("Restore() = %v, want nothing", describeAll(ts))
	}
	failing := func(r int, d *dw100) float64 {
		if d.id == "dw-07" && r < 10 {
			return -27
		}
		return 0
	}
	ts := fleetScenario(t, e, c, newFleetSim(50, 4), 15, func(int) float64 { return 0 }, failing)
	if len(ts) != 1 || ts[0].Change != Clear || ts[0].Device != "dw-07" {
		t.Fatalf("transitions after restore:%s\nwant one clear for dw-07", describeAll(ts))
	}
}

// TestFleet_DistributionCapHolds: the fleet distribution keeps at most MaxFleetDevices,
// the devices with the lowest ID hash, however many devices report.
func TestFleet_DistributionCapHolds(t *testing.T) {
	t.Parallel()
	c := &clock{now: t0}
	e := newTestEngine(t, c, func(cfg *EngineConfig) { cfg.MaxFleetDevices = 20 }, exampleFile(t))
	ds := newFleetSim(200, 5)
	fleetScenario(t, e, c, ds, 3, func(int) float64 { return 0 }, noFault)
	s := e.Stats()
	if s.FleetDevices != 20 || s.Devices != 200 {
		t.Fatalf("Stats() = %+v, want 20 fleet devices of 200", s)
	}
	var hashes []uint64
	for _, d := range ds {
		hashes = append(hashes, hashID(d.id))
	}
	slicesSort(hashes)
	fl := e.products["DW100"].fleets[0]
	for id, en := range fl.byID {
		if en.hash > hashes[19] {
			t.Errorf("device %s in the sample has hash rank > 20", id)
		}
	}
}
