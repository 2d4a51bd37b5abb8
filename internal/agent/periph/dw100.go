package periph

import (
	"sync"
	"time"
)

// DW100 wiring: the peripherals of the reference dishwasher, as its manifest
// (examples/dw100/app/app.json) declares them.
const (
	// DW100WaterTemp is the ADC channel of the water temperature, in tenths of a degree C.
	DW100WaterTemp = 0
	// DW100DryingTemp is the ADC channel of the drying-air temperature, in tenths of a degree C.
	DW100DryingTemp = 1
	// DW100RinseAgent is the ADC channel of the rinse-agent level, in percent.
	DW100RinseAgent = 2
	// DW100Heater is the GPIO output that switches the heater (high: on).
	DW100Heater = 4
	// DW100Door is the GPIO input of the door switch (high: open).
	DW100Door = 17
)

// HeaterFault is a heater failure the DW100 simulation can show.
type HeaterFault int

const (
	// HeaterWorking heats while the heater output is on.
	HeaterWorking HeaterFault = iota
	// HeaterDead never heats: the drying temperature stays unusually cool.
	HeaterDead
	// HeaterRunaway heats whether on or off, up to 110 °C: the drying temperature is
	// unusually hot.
	HeaterRunaway
)

// Model constants, in tenths of a degree C (per second for rates).
const (
	dw100Ambient       = 200
	dw100MaxWater      = 700
	dw100MaxDrying     = 800
	dw100RunawayMax    = 1100
	dw100HeatWater     = 20
	dw100HeatDrying    = 30
	dw100HeatRunaway   = 50
	dw100CoolPerSecond = 5
)

// DW100 is a Simulated board wired as the DW100 dishwasher, with a small thermal model:
// [DW100.Step] heats the water and the drying air while the heater is on and cools them
// towards 20 °C while it is off. Tests and the fleet simulator set the readings directly,
// or set a heater fault and let Step show its symptoms. It is safe for concurrent use.
type DW100 struct {
	*Simulated

	mu                   sync.Mutex
	water, drying, rinse int64
	fault                HeaterFault
	heaterSeconds        float64          // fractional heating carried between steps
	now                  func() time.Time // RealTime's clock; nil: only Step advances
	last                 time.Time
}

// RealTime makes the model advance with now on its own: every reading first steps it by
// the time since the previous one, so an app that switches the heater on sees the water and
// the drying air warm up (or not, with a heater fault) as on a real machine. The agent's
// simulated DW100 (--peripherals dw100) runs this way; tests that set readings do not.
func (d *DW100) RealTime(now func() time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.now, d.last = now, now()
}

// NewDW100 returns a DW100 at room temperature, door closed, heater off, rinse agent full.
func NewDW100() *DW100 {
	d := &DW100{Simulated: NewSimulated(), water: dw100Ambient, drying: dw100Ambient, rinse: 100}
	d.SetADCFunc(DW100WaterTemp, d.reading(&d.water))
	d.SetADCFunc(DW100DryingTemp, d.reading(&d.drying))
	d.SetADCFunc(DW100RinseAgent, d.reading(&d.rinse))
	d.SetInput(DW100Door, false)
	return d
}

func (d *DW100) reading(v *int64) func() (int64, error) {
	return func() (int64, error) {
		d.advance()
		d.mu.Lock()
		defer d.mu.Unlock()
		return *v, nil
	}
}

// SetWaterTemp sets the water temperature reading, in tenths of a degree C.
func (d *DW100) SetWaterTemp(deci int64) { d.set(&d.water, deci) }

// SetDryingTemp sets the drying temperature reading, in tenths of a degree C.
func (d *DW100) SetDryingTemp(deci int64) { d.set(&d.drying, deci) }

// SetRinseAgent sets the rinse-agent level, in percent.
func (d *DW100) SetRinseAgent(percent int64) { d.set(&d.rinse, percent) }

// SetHeaterFault makes later Steps show fault.
func (d *DW100) SetHeaterFault(f HeaterFault) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fault = f
}

// SetDoorOpen drives the door switch.
func (d *DW100) SetDoorOpen(open bool) { d.SetInput(DW100Door, open) }

// HeaterOn reports whether the app has switched the heater on.
func (d *DW100) HeaterOn() bool { return d.Pin(DW100Heater) }

func (d *DW100) set(p *int64, v int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	*p = v
}

// advance steps a RealTime model to now.
func (d *DW100) advance() {
	on := d.HeaterOn()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.now == nil {
		return
	}
	t := d.now()
	if dt := t.Sub(d.last); dt > 0 {
		d.stepLocked(on, dt)
	}
	d.last = t
}

// Step advances the thermal model by dt.
func (d *DW100) Step(dt time.Duration) {
	on := d.HeaterOn()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stepLocked(on, dt)
}

func (d *DW100) stepLocked(on bool, dt time.Duration) {
	secs := d.heaterSeconds + dt.Seconds()
	whole := int64(secs)
	d.heaterSeconds = secs - float64(whole)
	switch {
	case d.fault == HeaterRunaway:
		d.water = approach(d.water, dw100MaxWater, dw100HeatWater*whole)
		d.drying = approach(d.drying, dw100RunawayMax, dw100HeatRunaway*whole)
	case on && d.fault == HeaterWorking:
		d.water = approach(d.water, dw100MaxWater, dw100HeatWater*whole)
		d.drying = approach(d.drying, dw100MaxDrying, dw100HeatDrying*whole)
	default:
		d.water = approach(d.water, dw100Ambient, dw100CoolPerSecond*whole)
		d.drying = approach(d.drying, dw100Ambient, dw100CoolPerSecond*whole)
	}
}

// approach moves v towards target by at most step.
func approach(v, target, step int64) int64 {
	switch {
	case v < target:
		return min(v+step, target)
	case v > target:
		return max(v-step, target)
	}
	return v
}
