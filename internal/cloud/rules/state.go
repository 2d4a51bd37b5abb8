package rules

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// device is what the engine keeps per device: a fixed-size evidence ring and one
// ruleState per rule, so its memory is bounded by the file, not by the traffic.
type device struct {
	id       string
	lastRecv time.Time // engine time of the last sample
	lastTime time.Time // device time of the last sample
	ring     []evSample
	next     int
	rules    []ruleState
}

// evSample is a compact copy of a sample for evidence: the declared metrics only.
type evSample struct {
	t            time.Time
	cycle, phase string
	has          uint64 // bit i: metric i of the file is present
	vals         []float64
}

type ruleState struct {
	firing   bool
	since    time.Time // the open episode's start
	lastTrue time.Time // engine time of the last sample that kept the alert open
	// pending counts the samples (or cycles) the condition has held before firing.
	pendingN     int
	pendingSince time.Time

	// rate: the previous sample
	hasPrev   bool
	prevT     time.Time
	prevV     float64
	prevCycle string

	// missing: engine time of the last sample (carrying the metric)
	seen time.Time

	// fleet: the open cycle segment, and the last one judged
	segCycle, segPhase string
	segSum             float64
	segN               int
	segFirst, segLast  time.Time
	segRecv            time.Time
	closedCycle        string
}

func (d *device) record(p *product, s *Sample, max int) {
	var e *evSample
	if len(d.ring) < max {
		d.ring = append(d.ring, evSample{vals: make([]float64, len(p.file.Metrics))})
		e = &d.ring[len(d.ring)-1]
	} else {
		e = &d.ring[d.next]
		d.next = (d.next + 1) % max
	}
	e.t, e.cycle, e.phase, e.has = s.Time, s.Cycle, s.Phase, 0
	for i, m := range p.file.Metrics {
		if v, ok := s.Readings[m.Name]; ok {
			e.vals[i] = v
			e.has |= 1 << i
		}
	}
}

// evidence returns the device's kept samples from..to (zero from: any) that carry every
// metric in uses and, when phase is set, are at that phase; oldest first.
func (d *device) evidence(p *product, from, to time.Time, uses []string, phase string) []Sample {
	var mask uint64
	for _, u := range uses {
		mask |= 1 << p.metricIdx[u]
	}
	var out []Sample
	n := len(d.ring)
	for k := range n {
		e := &d.ring[(d.next+k)%n]
		if e.has&mask != mask || (phase != "" && e.phase != phase) ||
			(!from.IsZero() && e.t.Before(from)) || e.t.After(to) {
			continue
		}
		s := Sample{Device: d.id, Product: p.file.Product, Time: e.t, Cycle: e.cycle, Phase: e.phase,
			Readings: make(map[string]float64, len(p.file.Metrics))}
		for i, m := range p.file.Metrics {
			if e.has&(1<<i) != 0 {
				s.Readings[m.Name] = e.vals[i]
			}
		}
		out = append(out, s)
	}
	return out
}

// advance moves a rule's episode: active says the firing condition holds, clear that the
// clearing one does (the hysteresis: a firing alert stays open until clear, and a cleared
// one fires only after active again for the sustained time). It returns the change, if
// any, and when the condition began to hold (for evidence).
func (st *ruleState) advance(r *Rule, from, at, now time.Time, active, clear bool) (Change, time.Time) {
	if st.firing {
		if clear {
			st.firing, st.pendingN = false, 0
			return Clear, from
		}
		st.lastTrue = now
		return "", time.Time{}
	}
	if !active {
		st.pendingN = 0
		return "", time.Time{}
	}
	if st.pendingN == 0 {
		st.pendingSince = from
	}
	st.pendingN++
	sus := r.Sustained
	if (sus.Count > 0 && st.pendingN < sus.Count) || (sus.Duration > 0 && at.Sub(st.pendingSince) < sus.Duration) {
		return "", time.Time{}
	}
	st.firing, st.since, st.lastTrue, st.pendingN = true, at, now, 0
	return Fire, st.pendingSince
}

func (e *Engine) threshold(p *product, d *device, r *Rule, st *ruleState, s *Sample, now time.Time) *Transition {
	active, ok, err := e.ev.eval(r.when, s)
	if err != nil {
		e.stats.EvalErrors++
		return nil
	}
	if !ok {
		return nil // lacks a metric: not judged
	}
	clr := !active
	if st.firing && r.clearWhen != nil {
		clr, ok, err = e.ev.eval(r.clearWhen, s)
		if err != nil || !ok {
			if err != nil {
				e.stats.EvalErrors++
			}
			return nil
		}
	}
	ch, from := st.advance(r, s.Time, s.Time, now, active, clr)
	if ch == "" {
		return nil
	}
	v := s.Readings[r.Metric]
	var msg string
	if ch == Fire {
		msg = fmt.Sprintf("%s: %s", p.value(r.Metric, v), r.When)
		if r.Sustained != (Sustained{}) {
			msg += " for " + sustainedText(r.Sustained, "samples")
		}
	} else {
		cond := r.ClearWhen
		if cond == "" {
			cond = "no longer " + r.When
		}
		msg = fmt.Sprintf("%s: %s", p.value(r.Metric, v), cond)
	}
	return e.transitionUses(p, d, r, ch, s.Time, v, from, s.Time, msg, r.uses, "")
}

func (e *Engine) rate(p *product, d *device, r *Rule, st *ruleState, s *Sample, now time.Time) *Transition {
	v, has := s.Readings[r.Metric]
	if !has {
		return nil
	}
	if r.Phase != "" && s.Phase != r.Phase {
		st.hasPrev = false // a rate spans one stretch of the phase only
		return nil
	}
	dt := s.Time.Sub(st.prevT)
	if st.hasPrev && dt < time.Second {
		return nil // too close to the previous sample to make a rate; keep the previous
	}
	prevT, prevV, paired := st.prevT, st.prevV, st.hasPrev && s.Cycle == st.prevCycle && dt <= r.MaxGap
	st.hasPrev, st.prevT, st.prevV, st.prevCycle = true, s.Time, v, s.Cycle
	if !paired {
		return nil
	}
	perMin := (v - prevV) / dt.Minutes()
	active := (r.Above != nil && perMin > *r.Above) || (r.Below != nil && perMin < *r.Below)
	ch, from := st.advance(r, prevT, s.Time, now, active, !active)
	if ch == "" {
		return nil
	}
	unit := unitText(p.unit(r.Metric))
	var msg string
	if ch == Fire {
		limit := []string{}
		if r.Above != nil {
			limit = append(limit, "above "+fmtNum(*r.Above))
		}
		if r.Below != nil {
			limit = append(limit, "below "+fmtNum(*r.Below))
		}
		msg = fmt.Sprintf("%s changing %s%s/min (%s)", p.label(r.Metric), fmtSigned(perMin), unit, strings.Join(limit, ", "))
	} else {
		msg = fmt.Sprintf("%s changing %s%s/min, within its limits again", p.label(r.Metric), fmtSigned(perMin), unit)
	}
	return e.transitionUses(p, d, r, ch, s.Time, perMin, from, s.Time, msg, []string{r.Metric}, r.Phase)
}

func (e *Engine) missingSeen(p *product, d *device, r *Rule, st *ruleState, s *Sample, now time.Time) *Transition {
	if r.Metric != "" {
		if _, has := s.Readings[r.Metric]; !has {
			return nil
		}
	}
	prev := st.seen
	st.seen = now
	if !st.firing {
		return nil
	}
	st.firing, st.pendingN = false, 0
	msg := fmt.Sprintf("telemetry%s from %s again", ofMetric(p, r), d.id)
	if !prev.IsZero() {
		msg += " after " + fmtDuration(now.Sub(prev))
	}
	return e.transition(p, d, r, Clear, s.Time, now.Sub(prev).Minutes(), s.Time, s.Time, msg)
}

// transition builds a transition with the device's evidence for the rule.
func (e *Engine) transition(p *product, d *device, r *Rule, ch Change, at time.Time, v float64, from, to time.Time, msg string) *Transition {
	var uses []string
	if r.Metric != "" {
		uses = []string{r.Metric}
	}
	return e.transitionUses(p, d, r, ch, at, v, from, to, msg, uses, "")
}

func (e *Engine) transitionUses(p *product, d *device, r *Rule, ch Change, at time.Time, v float64, from, to time.Time, msg string, uses []string, phase string) *Transition {
	if r.Kind == KindMissing {
		from = time.Time{} // the evidence of silence is the last that was heard
	}
	t := &Transition{Change: ch, Rule: r.Name, Kind: r.Kind, Severity: r.Severity, Product: p.file.Product,
		Device: d.id, At: at, Value: v, Message: msg, Evidence: d.evidence(p, from, to, uses, phase)}
	if ch == Fire {
		t.Actions = r.Actions
	}
	return t
}

func (p *product) metric(name string) *Metric {
	if i, ok := p.metricIdx[name]; ok {
		return &p.file.Metrics[i]
	}
	return nil
}

func (p *product) label(name string) string {
	if m := p.metric(name); m != nil {
		return m.Label
	}
	return name
}

func (p *product) unit(name string) string {
	if m := p.metric(name); m != nil {
		return m.Unit
	}
	return ""
}

// value is "drying temperature 38.2 °C".
func (p *product) value(name string, v float64) string {
	return p.label(name) + " " + fmtNum(v) + unitText(p.unit(name))
}

// unitText spells a UCUM unit for people, with its leading space.
func unitText(u string) string {
	switch u {
	case "":
		return ""
	case "Cel":
		return " °C"
	case "[degF]":
		return " °F"
	}
	return " " + u
}

func fmtNum(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.Abs(v) >= 1 || v == 0:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func fmtSigned(v float64) string {
	if v >= 0 {
		return "+" + fmtNum(v)
	}
	return fmtNum(v)
}

// fmtDuration is "5m", "24h", "1h30m": time.Duration's text without zero units.
func fmtDuration(d time.Duration) string {
	d = d.Round(time.Second)
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func sustainedText(s Sustained, unit string) string {
	if s.Duration > 0 {
		return fmtDuration(s.Duration)
	}
	return fmt.Sprintf("%d %s", s.Count, unit)
}
