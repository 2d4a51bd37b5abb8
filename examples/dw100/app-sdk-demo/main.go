// Command app-sdk-demo is the DW100 dishwasher's application written against the public
// moat SDK (github.com/moat-iot/moat/sdk) and nothing else: it runs wash cycles (heat the
// water, wash, rinse, heat the drying air), publishes telemetry for the tenant's cloud,
// raises alerts for a slow heater and low rinse agent, reports its health, and answers the
// cloud's diagnostics commands. Each wash cycle has an ID; every tick of a phase (heat,
// wash, rinse, drying) publishes water_temp and drying_temp (Cel) and rinse_agent (%), and
// the end of a cycle publishes a cycle_end event with water_used (L) and energy_used
// (kW.h). The diagnostic "heater-self-test" heats for {"seconds": n} (default 10, at most
// 60) and judges the heater by how fast the drying air warms.
//
// Its manifest (../app/app.json) declares GPIO 4 (heater), GPIO 17 (door switch) and ADC
// channels 0 to 2 (water temperature and drying temperature in tenths of a degree C,
// rinse-agent level in percent). Run it under the moat runtime, which sets $MOAT_SOCKET:
//
//	app-sdk-demo -tick 1s -between 10m
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moat-iot/moat/sdk"
)

// DW100 wiring, as the manifest declares it.
const (
	heaterPin  = 4
	doorPin    = 17
	waterADC   = 0
	dryingADC  = 1
	rinseADC   = 2
	washTarget = 550 // 55.0 °C
	dryTarget  = 650 // 65.0 °C
	rinseLow   = 10  // percent
	heaterKW   = 2.0 // the heater's power, for energy_used
	waterUsed  = 11.5
	// minRise is the drying-air warming per minute below which the heater is failing; a
	// working DW100 heater warms it by well over 100 °C a minute from cold.
	minRise = 30.0
)

func main() {
	tick := flag.Duration("tick", time.Second, "how often a running cycle reads its sensors")
	between := flag.Duration("between", 10*time.Minute, "pause between wash cycles")
	heatLimit := flag.Int("heat-ticks", 120, "ticks a heating phase may take before the heater counts as faulty")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *tick, *between, *heatLimit); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "dw100:", err)
		os.Exit(1)
	}
}

// dishwasher is the app's view of the machine.
type dishwasher struct {
	c                    *sdk.Client
	heater, door         sdk.GPIO
	water, drying, rinse sdk.ADC
	tick                 time.Duration
	heatLimit            int
	cycleID              string
	heated               time.Duration // this cycle's heating time
}

func run(ctx context.Context, tick, between time.Duration, heatLimit int) error {
	c, err := sdk.Connect(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	d := &dishwasher{
		c: c, heater: c.GPIO(heaterPin), door: c.GPIO(doorPin),
		water: c.ADC(waterADC), drying: c.ADC(dryingADC), rinse: c.ADC(rinseADC),
		tick: tick, heatLimit: heatLimit,
	}
	// Healthy means: every sensor answers. A new version that cannot read them is rolled
	// back by the runtime.
	if _, err := d.readings(ctx); err != nil {
		_ = c.ReportUnhealthy(ctx, "sensors: "+err.Error())
		return err
	}
	if err := c.ReportHealthy(ctx); err != nil {
		return err
	}
	go func() { _ = c.Diagnostics(ctx, d.diagnose) }()

	for n := 1; ; n++ {
		d.cycleID = fmt.Sprintf("c-%d-%d", time.Now().Unix(), n)
		if err := d.cycle(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			_ = c.PublishEvent(ctx, sdk.Event{Name: "cycle_failed", Cycle: d.cycleID, Message: err.Error()})
		}
		if err := d.idle(ctx, between); err != nil {
			return err
		}
	}
}

// idleEvery is how often an idle dishwasher reports its sensors: the cloud's no-data
// rule (examples/dw100/rules.yaml) counts silence longer than two hours as a fault.
const idleEvery = time.Hour

// idle waits between cycles, reporting the sensors (phase "idle", no cycle) every
// idleEvery.
func (d *dishwasher) idle(ctx context.Context, wait time.Duration) error {
	d.cycleID = ""
	end := time.NewTimer(wait)
	defer end.Stop()
	report := time.NewTicker(idleEvery)
	defer report.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-end.C:
			return nil
		case <-report.C:
			if _, err := d.sample(ctx, "idle"); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

// readings are one sample of the sensors.
type readings struct {
	Phase    string `json:"phase"`
	Water    int64  `json:"water_deci_c"`
	Drying   int64  `json:"drying_deci_c"`
	Rinse    int64  `json:"rinse_agent_percent"`
	Heater   bool   `json:"heater"`
	DoorOpen bool   `json:"door_open"`
}

func (d *dishwasher) readings(ctx context.Context) (readings, error) {
	var r readings
	var err error
	if r.Water, err = d.water.Read(ctx); err != nil {
		return r, err
	}
	if r.Drying, err = d.drying.Read(ctx); err != nil {
		return r, err
	}
	if r.Rinse, err = d.rinse.Read(ctx); err != nil {
		return r, err
	}
	if r.DoorOpen, err = d.door.Get(ctx); err != nil {
		return r, err
	}
	r.Heater, err = d.heater.Get(ctx)
	return r, err
}

// cycle runs one wash cycle; the heater is off when it returns.
func (d *dishwasher) cycle(ctx context.Context) error {
	defer func() { _ = d.heater.Set(context.WithoutCancel(ctx), false) }()
	d.heated = 0
	if err := d.heat(ctx, "heat", func(r readings) int64 { return r.Water }, washTarget); err != nil {
		return err
	}
	if err := d.hold(ctx, "wash", 5); err != nil {
		return err
	}
	if err := d.hold(ctx, "rinse", 5); err != nil {
		return err
	}
	if err := d.heat(ctx, "drying", func(r readings) int64 { return r.Drying }, dryTarget); err != nil {
		return err
	}
	return d.c.PublishEvent(ctx, sdk.Event{Name: "cycle_end", Cycle: d.cycleID, Readings: map[string]sdk.Reading{
		"water_used":  {Value: waterUsed, Unit: sdk.UnitLitre},
		"energy_used": {Value: heaterKW * d.heated.Hours(), Unit: sdk.UnitKilowattHour},
	}})
}

// heat switches the heater on until the reading reaches target (pausing while the door is
// open), publishing telemetry each tick. A heater that does not get there in time is
// reported as an alert: the cloud's rules and diagnostics take it from there.
func (d *dishwasher) heat(ctx context.Context, phase string, of func(readings) int64, target int64) error {
	for i := 0; ; i++ {
		r, err := d.sample(ctx, phase)
		if err != nil {
			return err
		}
		if of(r) >= target {
			return d.heater.Set(ctx, false)
		}
		if i >= d.heatLimit {
			_ = d.heater.Set(ctx, false)
			return d.c.PublishEvent(ctx, sdk.Event{Name: "heater_slow", Cycle: d.cycleID, Message: fmt.Sprintf("%s phase: %.1f °C after %d ticks, target %.1f °C", phase, float64(of(r))/10, i, float64(target)/10)})
		}
		if err := d.heater.Set(ctx, !r.DoorOpen); err != nil {
			return err
		}
		if !r.DoorOpen {
			d.heated += d.tick
		}
		if err := sleep(ctx, d.tick); err != nil {
			return err
		}
	}
}

// hold runs a phase without heating for n ticks.
func (d *dishwasher) hold(ctx context.Context, phase string, n int) error {
	for range n {
		if _, err := d.sample(ctx, phase); err != nil {
			return err
		}
		if err := sleep(ctx, d.tick); err != nil {
			return err
		}
	}
	return nil
}

// sample reads the sensors and publishes them, with an alert when rinse agent runs low.
func (d *dishwasher) sample(ctx context.Context, phase string) (readings, error) {
	r, err := d.readings(ctx)
	if err != nil {
		return r, err
	}
	r.Phase = phase
	err = d.c.PublishTelemetry(ctx, sdk.Telemetry{Cycle: d.cycleID, Phase: phase, Readings: map[string]sdk.Reading{
		"water_temp":  {Value: float64(r.Water) / 10, Unit: sdk.UnitCelsius},
		"drying_temp": {Value: float64(r.Drying) / 10, Unit: sdk.UnitCelsius},
		"rinse_agent": {Value: float64(r.Rinse), Unit: sdk.UnitPercent},
	}})
	if err != nil && !errors.Is(err, sdk.ErrUnavailable) { // unavailable: this sample is lost
		return r, err
	}
	if r.Rinse < rinseLow {
		_ = d.c.PublishEvent(ctx, sdk.Event{Name: "rinse_agent_low", Cycle: d.cycleID,
			Readings: map[string]sdk.Reading{"rinse_agent": {Value: float64(r.Rinse), Unit: sdk.UnitPercent}}})
	}
	return r, nil
}

// diagnose answers the cloud's diagnostics: "sensors" reads everything;
// "heater-self-test" heats for {"seconds": n} (default 10, at most 60) and judges the
// heater by the drying air's warming: {"ok", "rise_c_per_min", "verdict": "ok" or
// "heater_failing"}.
func (d *dishwasher) diagnose(name string, args json.RawMessage) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	switch name {
	case "sensors":
		return d.readings(ctx)
	case "heater-self-test":
		var a struct {
			Seconds int `json:"seconds"`
		}
		if len(args) > 0 && string(args) != "null" {
			if err := json.Unmarshal(args, &a); err != nil {
				return nil, errors.New(`args must be {"seconds": 1 to 60}`)
			}
		}
		if a.Seconds == 0 {
			a.Seconds = 10
		}
		if a.Seconds < 1 || a.Seconds > 60 {
			return nil, errors.New(`args must be {"seconds": 1 to 60}`)
		}
		return d.heaterSelfTest(ctx, time.Duration(a.Seconds)*time.Second)
	}
	return nil, fmt.Errorf("unknown diagnostic %q", name)
}

// heaterSelfTest switches the heater on for dur (and off again, whatever happens) and
// measures how fast the drying air warms.
func (d *dishwasher) heaterSelfTest(ctx context.Context, dur time.Duration) (map[string]any, error) {
	before, err := d.drying.Read(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := d.heater.Set(ctx, true); err != nil {
		return nil, err
	}
	err = sleep(ctx, dur)
	after, rerr := d.drying.Read(context.WithoutCancel(ctx))
	elapsed := time.Since(start)
	if offErr := d.heater.Set(context.WithoutCancel(ctx), false); err == nil {
		err = offErr
	}
	if err = errors.Join(err, rerr); err != nil {
		return nil, err
	}
	rise := float64(after-before) / 10 / elapsed.Minutes()
	verdict := "ok"
	if rise < minRise {
		verdict = "heater_failing"
	}
	return map[string]any{"ok": verdict == "ok", "rise_c_per_min": math.Round(rise*10) / 10, "verdict": verdict}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
