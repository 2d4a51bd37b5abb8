// Command app-sdk-demo is the DW100 dishwasher's application written against the public
// moat SDK (github.com/moat-iot/moat/sdk) and nothing else: it runs wash cycles (heat the
// water, wash, rinse, heat the drying air), publishes telemetry for the tenant's cloud,
// raises alerts for a slow heater and low rinse agent, reports its health, and answers the
// cloud's diagnostics commands.
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

	for {
		if err := d.cycle(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			_ = c.Publish(ctx, "dw100/alerts", map[string]any{"alert": "cycle_failed", "detail": err.Error()})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(between):
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
	if err := d.heat(ctx, "wash", func(r readings) int64 { return r.Water }, washTarget); err != nil {
		return err
	}
	if err := d.hold(ctx, "rinse", 5); err != nil {
		return err
	}
	return d.heat(ctx, "dry", func(r readings) int64 { return r.Drying }, dryTarget)
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
			return d.c.Publish(ctx, "dw100/alerts", map[string]any{"alert": "heater_slow", "phase": phase, "reading": of(r), "target": target})
		}
		if err := d.heater.Set(ctx, !r.DoorOpen); err != nil {
			return err
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
	if err := d.c.Publish(ctx, "dw100/telemetry", r); err != nil && !errors.Is(err, sdk.ErrUnavailable) {
		return r, err
	}
	if r.Rinse < rinseLow {
		_ = d.c.Publish(ctx, "dw100/alerts", map[string]any{"alert": "rinse_agent_low", "percent": r.Rinse})
	}
	return r, nil
}

// diagnose answers the cloud's diagnostics: "sensors" reads everything; "heater_test"
// heats for {"seconds": n} (at most 30) and reports how much the water warmed.
func (d *dishwasher) diagnose(name string, args json.RawMessage) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	switch name {
	case "sensors":
		return d.readings(ctx)
	case "heater_test":
		var a struct {
			Seconds int `json:"seconds"`
		}
		if err := json.Unmarshal(args, &a); err != nil || a.Seconds < 1 || a.Seconds > 30 {
			return nil, errors.New(`args must be {"seconds": 1 to 30}`)
		}
		before, err := d.water.Read(ctx)
		if err != nil {
			return nil, err
		}
		if err := d.heater.Set(ctx, true); err != nil {
			return nil, err
		}
		err = sleep(ctx, time.Duration(a.Seconds)*time.Second)
		if offErr := d.heater.Set(context.WithoutCancel(ctx), false); err == nil {
			err = offErr
		}
		if err != nil {
			return nil, err
		}
		after, err := d.water.Read(ctx)
		if err != nil {
			return nil, err
		}
		return map[string]any{"delta_deci_c": after - before, "heater_ok": after-before >= 10}, nil
	}
	return nil, fmt.Errorf("unknown diagnostic %q", name)
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
