package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/moat-iot/moat/sdk"
)

// appEnv selects the DW100 app built into the moat binary: the demo's app image holds a
// launcher script that runs this binary with MOAT_DEMO_APP=dw100 (a real device's image
// holds the app itself, examples/dw100/app-sdk-demo). The script is what the image signs.
const appEnv = "MOAT_DEMO_APP"

// faultEnv, set to faultCrashAfterHealthy, makes the demo's DW100 app crash a moment after it
// reported healthy (app 3.0.0 of the rollout story): the agent commits it, then restarts it
// after each crash, and each crash is an app_crash report that the rollout gate counts.
const (
	faultEnv               = "MOAT_DEMO_FAULT"
	faultCrashAfterHealthy = "crash-after-healthy"
	// crashAfter is how long the faulty app runs after it reported healthy: long enough for
	// the agent to see the report and commit the app before the process exits.
	crashAfter = time.Second
)

// errFanDriver is the faulty app's crash.
var errFanDriver = errors.New("drying fan driver: nil pointer dereference at the first drying phase")

// MaybeRunApp runs the demo's DW100 application and exits when the process was started as
// one (by the agent, through the image's launcher script); otherwise it returns at once.
// The moat binary's main calls it first.
func MaybeRunApp() {
	if os.Getenv(appEnv) != "dw100" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runDW100(ctx)
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "dw100:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runDW100 is a small DW100 app on the public SDK: it reports healthy, answers the
// cloud's "heater-self-test", and runs wash cycles (heat, wash, rinse, drying), publishing
// telemetry each tick of a phase and a cycle_end event per cycle. The demo's dishwashers
// run SimSpeed times faster than real ones (their simulated heaters too, see startAgents),
// so that a cycle takes seconds, not an hour.
func runDW100(ctx context.Context) error {
	c, err := sdk.Connect(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	if err := c.ReportHealthy(ctx); err != nil {
		return err
	}
	if os.Getenv(faultEnv) == faultCrashAfterHealthy {
		if err := sleepCtx(ctx, crashAfter); err != nil {
			return nil
		}
		return errFanDriver
	}
	d := &dw100{c: c, tick: time.Second / SimSpeed}
	go func() { _ = c.Diagnostics(ctx, d.diagnose) }()
	door := c.GPIO(dwDoor)
	for n := 1; ; n++ {
		// A dishwasher with its door open waits (the demo's rollout fleet stands open, so
		// that sixteen idle apps cost the demo a GPIO read a second each, not a wash cycle).
		if open, err := door.Get(ctx); err != nil || open {
			if err != nil && ctx.Err() == nil {
				return err
			}
			if sleepCtx(ctx, time.Second) != nil {
				return nil
			}
			continue
		}
		if err := d.cycle(ctx, fmt.Sprintf("c-%d-%d", time.Now().Unix(), n)); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if sleepCtx(ctx, 10*time.Second/SimSpeed) != nil {
			return nil
		}
	}
}

// SimSpeed is how much faster than real time the demo's dishwashers run.
const SimSpeed = 4

// The DW100's wiring (examples/dw100/app/app.json) and its cycle.
const (
	dwHeater, dwWater, dwDrying, dwRinse = 4, 0, 1, 2
	dwDoor                               = 17       // input, high: open
	dwWashTarget, dwDryTarget            = 550, 650 // tenths of a degree C
	dwHeatLimit                          = 40       // ticks a heating phase may take (a working heater needs under 20)
	dwHeaterKW                           = 2.0      // the heater's power, for energy_used
	dwWaterPerCycle                      = 11.5     // litres
)

type dw100 struct {
	c        *sdk.Client
	tick     time.Duration
	heaterOn time.Duration // this cycle's heating time, for energy_used
}

// cycle runs one wash cycle; the heater is off when it returns.
func (d *dw100) cycle(ctx context.Context, id string) error {
	d.heaterOn = 0
	heater := d.c.GPIO(dwHeater)
	defer func() { _ = heater.Set(context.WithoutCancel(ctx), false) }()
	steps := []struct {
		phase  string
		adc    int
		target int64 // heat until the ADC reads this; 0: hold 5 ticks
	}{{"heat", dwWater, dwWashTarget}, {"wash", 0, 0}, {"rinse", 0, 0}, {"drying", dwDrying, dwDryTarget}}
	for _, st := range steps {
		for i := 0; ; i++ {
			r, err := d.publish(ctx, id, st.phase)
			if err != nil {
				return err
			}
			done := st.target == 0 && i >= 5 || st.target != 0 && (r[st.adc] >= st.target || i >= dwHeatLimit)
			if err := heater.Set(ctx, st.target != 0 && !done); err != nil || done {
				if err != nil {
					return err
				}
				break
			}
			if st.target != 0 {
				d.heaterOn += d.tick * SimSpeed // simulated time
			}
			if err := sleepCtx(ctx, d.tick); err != nil {
				return err
			}
		}
	}
	return d.c.PublishEvent(ctx, sdk.Event{Name: "cycle_end", Cycle: id, Readings: map[string]sdk.Reading{
		"water_used":  {Value: dwWaterPerCycle, Unit: sdk.UnitLitre},
		"energy_used": {Value: dwHeaterKW * d.heaterOn.Hours(), Unit: sdk.UnitKilowattHour},
	}})
}

// publish reads the sensors (ADC channel -> raw value) and publishes them for phase.
func (d *dw100) publish(ctx context.Context, cycle, phase string) (map[int]int64, error) {
	r := map[int]int64{}
	for _, ch := range []int{dwWater, dwDrying, dwRinse} {
		v, err := d.c.ADC(ch).Read(ctx)
		if err != nil {
			return nil, err
		}
		r[ch] = v
	}
	err := d.c.PublishTelemetry(ctx, sdk.Telemetry{Cycle: cycle, Phase: phase, Readings: map[string]sdk.Reading{
		"water_temp":  {Value: float64(r[dwWater]) / 10, Unit: sdk.UnitCelsius},
		"drying_temp": {Value: float64(r[dwDrying]) / 10, Unit: sdk.UnitCelsius},
		"rinse_agent": {Value: float64(r[dwRinse]), Unit: sdk.UnitPercent},
	}})
	if errors.Is(err, sdk.ErrUnavailable) {
		err = nil // the runtime's queue is busy: this sample is lost, the next one comes
	}
	return r, err
}

// diagnose answers the cloud's diagnostics.
func (d *dw100) diagnose(name string, args json.RawMessage) (any, error) {
	if name != "heater-self-test" {
		return nil, fmt.Errorf("unknown diagnostic %q", name)
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(a.Seconds+15)*time.Second)
	defer cancel()
	return heaterSelfTest(ctx, d.c, time.Duration(a.Seconds)*time.Second)
}

// SelfTestMinRise is the drying-air warming per minute below which the heater is failing;
// a working DW100 heater warms it by well over 100 °C a minute from cold.
const SelfTestMinRise = 30.0

// heaterSelfTest switches the heater on for d (then off, whatever happens), measures how
// fast the drying air warms, and judges the heater.
func heaterSelfTest(ctx context.Context, c *sdk.Client, d time.Duration) (map[string]any, error) {
	heater, drying := c.GPIO(dwHeater), c.ADC(dwDrying)
	before, err := drying.Read(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := heater.Set(ctx, true); err != nil {
		return nil, err
	}
	err = sleepCtx(ctx, d)
	after, rerr := drying.Read(context.WithoutCancel(ctx))
	elapsed := time.Since(start)
	if offErr := heater.Set(context.WithoutCancel(ctx), false); err == nil {
		err = offErr
	}
	if err = errors.Join(err, rerr); err != nil {
		return nil, err
	}
	rise := float64(after-before) / 10 / (elapsed.Minutes() * SimSpeed) // per simulated minute
	verdict := "ok"
	if rise < SelfTestMinRise {
		verdict = "heater_failing"
	}
	return map[string]any{"ok": verdict == "ok", "rise_c_per_min": math.Round(rise*10) / 10, "verdict": verdict,
		"seconds": d.Seconds(), "drying_temp_start": float64(before) / 10, "drying_temp_end": float64(after) / 10}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// appMode is how a demo app image behaves.
type appMode int

const (
	appRuns                appMode = iota // the DW100 app built into this binary
	appCrashesAtStart                     // 2.0.0: fails before it reports healthy
	appCrashesAfterHealthy                // 3.0.0: reports healthy, then crashes (faultEnv)
)

// appScript is the entry point of the demo's app images: a launcher for the app built into
// exe, or an app that fails at start.
func appScript(exe string, mode appMode) []byte {
	launch := appEnv + "=dw100 exec '" + strings.ReplaceAll(exe, "'", `'\''`) + "'\n"
	switch mode {
	case appCrashesAtStart:
		return []byte("#!/bin/sh\necho 'dw100 2.0.0: heater calibration table missing' >&2\nexit 3\n")
	case appCrashesAfterHealthy:
		return []byte("#!/bin/sh\n" + faultEnv + "=" + faultCrashAfterHealthy + " " + launch)
	}
	return []byte("#!/bin/sh\n" + launch)
}
