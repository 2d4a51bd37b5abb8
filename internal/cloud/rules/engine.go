package rules

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Sample is one device's readings at one time, as the engine judges them (the cloud
// converts each telemetry payload to one Sample).
type Sample struct {
	Device  string
	Product string
	// Time is the device's time of the readings.
	Time  time.Time
	Cycle string
	Phase string
	// Readings are values by metric name; metrics a file does not declare are ignored.
	Readings map[string]float64
}

// Change says whether a transition opens or closes an alert.
type Change string

// The changes.
const (
	Fire  Change = "fire"
	Clear Change = "clear"
)

// Transition is an alert opening (Fire) or closing (Clear). A rule fires once per episode
// for a device, and the episode ends with exactly one Clear.
type Transition struct {
	Change   Change
	Rule     string
	Kind     Kind
	Severity Severity
	Product  string
	Device   string
	At       time.Time
	// Value is the judged value: the reading (threshold), the change per minute (rate), the
	// cycle mean (fleet) or the minutes of silence (missing).
	Value   float64
	Message string
	// Evidence holds the device's samples that fired the alert (or closed it), oldest first,
	// at most EngineConfig.EvidenceSamples, with the file's declared metrics only.
	Evidence []Sample
	// Actions are the rule's actions, on Fire only.
	Actions []Action
}

// Episode is an open alert, as the store keeps it; Restore hands them back after a restart.
type Episode struct {
	Product string
	Device  string
	Rule    string
	Since   time.Time
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	// Files are the rule files, one per product.
	Files []*File
	// Now is the engine's clock: receive times, the missing-data silence and the clock
	// skew check read it.
	Now    func() time.Time
	Logger *slog.Logger
	// MaxDevices bounds the devices tracked per product; samples of further devices are
	// dropped and counted in Stats.OverCap.
	MaxDevices int
	// MaxFleetDevices bounds the devices of one fleet rule's distribution; beyond it the
	// distribution keeps the devices with the lowest hash of their ID (a stable, uniform
	// sample: bottom-k sampling), and every device is still judged against it.
	MaxFleetDevices int
	// EvidenceSamples bounds the samples kept per device for evidence (and so a
	// transition's Evidence).
	EvidenceSamples int
	// MaxClockSkew: samples timed further ahead of Now are dropped (Stats.Future).
	MaxClockSkew time.Duration
	// ForgetAfter: a device silent this long, with no open alert, is forgotten. It must
	// exceed every rule's after, window and clear_after.
	ForgetAfter time.Duration
}

// DefaultEngineConfig returns the limits moat cloud uses; Files, Now and Logger are left
// to the caller.
func DefaultEngineConfig() EngineConfig {
	return EngineConfig{
		MaxDevices:      1_000_000,
		MaxFleetDevices: 10_000,
		EvidenceSamples: 20,
		MaxClockSkew:    5 * time.Minute,
		ForgetAfter:     31 * 24 * time.Hour,
	}
}

// Validate reports every problem of c.
func (c EngineConfig) Validate() error {
	var errs []error
	if c.Now == nil {
		errs = append(errs, errors.New("now: a clock is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger: a logger is required"))
	}
	if c.MaxDevices < 1 {
		errs = append(errs, fmt.Errorf("max_devices: %d must be positive", c.MaxDevices))
	}
	if c.MaxFleetDevices < 3 {
		errs = append(errs, fmt.Errorf("max_fleet_devices: %d must be at least 3", c.MaxFleetDevices))
	}
	if c.EvidenceSamples < 1 || c.EvidenceSamples > 1000 {
		errs = append(errs, fmt.Errorf("evidence_samples: %d is out of range (1 to 1000)", c.EvidenceSamples))
	}
	if c.MaxClockSkew < 0 {
		errs = append(errs, fmt.Errorf("max_clock_skew: %s must not be negative", c.MaxClockSkew))
	}
	seen := map[string]bool{}
	for i, f := range c.Files {
		if f == nil {
			errs = append(errs, fmt.Errorf("files[%d]: nil", i))
			continue
		}
		if seen[f.Product] {
			errs = append(errs, fmt.Errorf("files[%d] (%s): a second file for product %s", i, f.Name, f.Product))
		}
		seen[f.Product] = true
		for _, r := range f.Rules {
			for _, d := range []time.Duration{r.After, r.Window, r.ClearAfter} {
				if d >= c.ForgetAfter {
					errs = append(errs, fmt.Errorf("forget_after: %s must exceed %s of rule %s in %s", c.ForgetAfter, d, r.Name, f.Name))
				}
			}
			if r.Kind == KindFleet && r.MinDevices > c.MaxFleetDevices {
				errs = append(errs, fmt.Errorf("max_fleet_devices: %d is less than min_devices %d of rule %s in %s", c.MaxFleetDevices, r.MinDevices, r.Name, f.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// Stats counts what the engine holds and what it dropped.
type Stats struct {
	// Devices are the devices tracked, over all products.
	Devices int
	// FleetDevices are the entries of every fleet distribution.
	FleetDevices int
	// Samples were judged; the others were dropped for the reason named.
	Samples        uint64
	UnknownProduct uint64
	Invalid        uint64
	Future         uint64
	Late           uint64
	OverCap        uint64
	// EvalErrors counts conditions whose evaluation erred (the sample was not judged).
	EvalErrors uint64
}

// Engine judges samples against the rules. It keeps state in memory only, bounded by its
// config; its methods are safe for concurrent use (one lock).
type Engine struct {
	mu       sync.Mutex
	cfg      EngineConfig
	log      *slog.Logger
	products map[string]*product
	ev       evaluator
	stats    Stats
}

type product struct {
	file      *File
	devices   map[string]*device
	fleets    []*fleet // by rule index; nil for other kinds
	metricIdx map[string]int
	capWarned bool
}

// NewEngine builds an engine for cfg.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rules engine config: %w", err)
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, products: map[string]*product{}, ev: evaluator{env: map[string]any{}}}
	for _, f := range cfg.Files {
		p := &product{file: f, devices: map[string]*device{}, fleets: make([]*fleet, len(f.Rules)), metricIdx: map[string]int{}}
		for i, m := range f.Metrics {
			p.metricIdx[m.Name] = i
		}
		for i, r := range f.Rules {
			if r.Kind == KindFleet {
				p.fleets[i] = newFleet(cfg.MaxFleetDevices, r.Window)
			}
		}
		e.products[f.Product] = p
	}
	return e, nil
}

// Stats returns the engine's counts.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	for _, p := range e.products {
		s.Devices += len(p.devices)
		for _, f := range p.fleets {
			if f != nil {
				s.FleetDevices += len(f.byID)
			}
		}
	}
	return s
}

// Observe judges samples, in order, and returns the alerts they open and close. A
// device's samples must come in time order: one older than the device's last is dropped
// (Stats.Late).
func (e *Engine) Observe(samples []Sample) []Transition {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Now()
	var out []Transition
	for i := range samples {
		out = e.observe(&samples[i], now, out)
	}
	return out
}

func (e *Engine) observe(s *Sample, now time.Time, out []Transition) []Transition {
	p := e.products[s.Product]
	switch {
	case p == nil:
		e.stats.UnknownProduct++
		return out
	case s.Device == "" || len(s.Device) > 256 || s.Time.IsZero():
		e.stats.Invalid++
		return out
	case s.Time.After(now.Add(e.cfg.MaxClockSkew)):
		e.stats.Future++
		return out
	}
	d := e.device(p, s.Device)
	if d == nil {
		return out
	}
	if s.Time.Before(d.lastTime) {
		e.stats.Late++
		return out
	}
	e.stats.Samples++
	d.lastRecv, d.lastTime = now, s.Time
	d.record(p, s, e.cfg.EvidenceSamples)
	for ri, r := range p.file.Rules {
		st := &d.rules[ri]
		var t *Transition
		switch r.Kind {
		case KindThreshold:
			t = e.threshold(p, d, r, st, s, now)
		case KindRate:
			t = e.rate(p, d, r, st, s, now)
		case KindMissing:
			t = e.missingSeen(p, d, r, st, s, now)
		case KindFleet:
			t = e.fleetSample(p, d, ri, st, s, now)
		}
		if t != nil {
			out = append(out, *t)
		}
	}
	return out
}

// device returns the state of a device, creating it within the product's cap (nil past
// it). Attacked by TestEngine_DeviceCapHolds.
func (e *Engine) device(p *product, id string) *device {
	if d := p.devices[id]; d != nil {
		return d
	}
	if len(p.devices) >= e.cfg.MaxDevices {
		e.stats.OverCap++
		if !p.capWarned {
			p.capWarned = true
			e.log.Warn("rules: device cap reached; samples of further devices are not judged",
				slog.String("product", p.file.Product), slog.Int("max_devices", e.cfg.MaxDevices))
		}
		return nil
	}
	d := &device{id: id, rules: make([]ruleState, len(p.file.Rules))}
	p.devices[id] = d
	return d
}

// Seen tells the engine a device was last heard from at a time (from the store after a
// restart), so that the missing-data rules judge it before it sends again.
func (e *Engine) Seen(productName, deviceID string, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.products[productName]
	if p == nil || deviceID == "" || len(deviceID) > 256 {
		return
	}
	d := e.device(p, deviceID)
	if d == nil {
		return
	}
	if at.After(d.lastRecv) {
		d.lastRecv = at
	}
	for ri, r := range p.file.Rules {
		if st := &d.rules[ri]; r.Kind == KindMissing && !st.firing && at.After(st.seen) {
			st.seen = at
		}
	}
}

// Restore marks alerts the store holds open, so that they do not fire again; their Clear
// comes when their condition ends. It returns a Clear for each episode whose product or
// rule no longer exists (the store should close them). Attacked by
// TestEngine_RestoreDoesNotRefire.
func (e *Engine) Restore(open []Episode) []Transition {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Now()
	var out []Transition
	for _, ep := range open {
		p := e.products[ep.Product]
		ri := -1
		if p != nil {
			for i, r := range p.file.Rules {
				if r.Name == ep.Rule {
					ri = i
				}
			}
		}
		if ri < 0 {
			out = append(out, Transition{Change: Clear, Rule: ep.Rule, Product: ep.Product, Device: ep.Device, At: now,
				Message: fmt.Sprintf("rule %s is no longer in the rules of %s", ep.Rule, ep.Product)})
			continue
		}
		if ep.Device == "" || len(ep.Device) > 256 {
			continue
		}
		d := e.device(p, ep.Device)
		if d == nil {
			continue
		}
		st := &d.rules[ri]
		st.firing, st.since, st.lastTrue, st.pendingN = true, ep.Since, now, 0
		if d.lastRecv.IsZero() {
			// Not silent since the epoch: forgetting and clear_after count from now.
			d.lastRecv = now
		}
	}
	return out
}

// Tick judges what time alone decides: missing data, fleet cycle segments that ended
// without a following sample, clear_after, and forgets idle devices.
func (e *Engine) Tick(now time.Time) []Transition {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Transition
	for _, p := range e.products {
		for id, d := range p.devices {
			open := false
			for ri, r := range p.file.Rules {
				st := &d.rules[ri]
				if t := e.tickRule(p, d, ri, r, st, now); t != nil {
					out = append(out, *t)
				}
				open = open || st.firing
			}
			if !open && now.Sub(d.lastRecv) > e.cfg.ForgetAfter {
				delete(p.devices, id)
			}
		}
	}
	return out
}

// segmentIdle closes a fleet rule's cycle segment when the device has said nothing more
// of it for this long (the last phase of a cycle, or a device that went quiet).
const segmentIdle = 15 * time.Minute

func (e *Engine) tickRule(p *product, d *device, ri int, r *Rule, st *ruleState, now time.Time) *Transition {
	if r.Kind == KindFleet && st.segN > 0 && now.Sub(st.segRecv) >= segmentIdle {
		if t := e.closeSegment(p, d, ri, st, now); t != nil {
			return t
		}
	}
	if r.Kind == KindMissing && !st.firing && !st.seen.IsZero() && now.Sub(st.seen) >= r.After {
		st.firing, st.since, st.lastTrue = true, now, now
		silent := now.Sub(st.seen)
		return e.transition(p, d, r, Fire, now, silent.Minutes(), time.Time{}, now,
			fmt.Sprintf("no telemetry%s from %s for %s (after %s)", ofMetric(p, r), d.id, fmtDuration(silent), fmtDuration(r.After)))
	}
	if st.firing && r.ClearAfter > 0 && now.Sub(st.lastTrue) >= r.ClearAfter {
		st.firing, st.pendingN = false, 0
		if r.Kind == KindMissing {
			st.seen = time.Time{} // armed again by the next sample
		}
		return e.transition(p, d, r, Clear, now, 0, now, now,
			fmt.Sprintf("%s cleared: nothing kept it open for %s", r.Name, fmtDuration(r.ClearAfter)))
	}
	return nil
}

func ofMetric(p *product, r *Rule) string {
	if r.Metric == "" {
		return ""
	}
	return " of " + p.label(r.Metric)
}
