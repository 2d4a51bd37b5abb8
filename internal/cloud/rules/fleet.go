package rules

import (
	"container/heap"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"time"
)

// fleetSample feeds a sample to a fleet rule: samples of one (cycle, phase) make a
// segment; when the device moves to another cycle or phase (or Tick finds the segment
// idle) the segment's mean is judged against the fleet and then joins it.
func (e *Engine) fleetSample(p *product, d *device, ri int, st *ruleState, s *Sample, now time.Time) *Transition {
	r := p.file.Rules[ri]
	var t *Transition
	if st.segN > 0 && (s.Cycle != st.segCycle || (r.Phase != "" && s.Phase != st.segPhase)) {
		t = e.closeSegment(p, d, ri, st, now)
	}
	v, has := s.Readings[r.Metric]
	if !has || s.Cycle == "" || (r.Phase != "" && s.Phase != r.Phase) || s.Cycle == st.closedCycle {
		return t
	}
	if st.segN == 0 {
		st.segCycle, st.segPhase, st.segSum, st.segFirst = s.Cycle, s.Phase, 0, s.Time
	}
	st.segSum += v
	st.segN++
	st.segLast, st.segRecv = s.Time, now
	return t
}

// closeSegment judges the device's segment mean x against the fleet:
// z = (x - median) / max(1.4826 * MAD, min_spread), the median and MAD taken over the
// fleet devices' latest segment means within the window (the device's own included).
// Attacked by TestFleet_SummerDoesNotFire and TestFleet_FailingHeaterFiresOnce.
func (e *Engine) closeSegment(p *product, d *device, ri int, st *ruleState, now time.Time) *Transition {
	r := p.file.Rules[ri]
	mean := st.segSum / float64(st.segN)
	first, last := st.segFirst, st.segLast
	st.closedCycle, st.segN = st.segCycle, 0
	fl := p.fleets[ri]
	med, mad, n := fl.stats(now)
	defer fl.update(d.id, mean, last)
	if n < r.MinDevices {
		return nil // the fleet is too small to say what is usual
	}
	sigma := math.Max(1.4826*mad, r.MinSpread)
	var z float64
	switch {
	case sigma > 0:
		z = (mean - med) / sigma
	case mean > med:
		z = math.Inf(1)
	case mean < med:
		z = math.Inf(-1)
	}
	var active, clr bool
	switch r.Direction {
	case DirectionAbove:
		active, clr = z > r.Z, z < r.ClearZ
	case DirectionBelow:
		active, clr = z < -r.Z, z > -r.ClearZ
	default:
		active, clr = math.Abs(z) > r.Z, math.Abs(z) < r.ClearZ
	}
	ch, from := st.advance(r, first, last, now, active, clr)
	if ch == "" {
		return nil
	}
	word := "unusual"
	if ch == Clear {
		word = "usual again"
	}
	msg := fmt.Sprintf("%s is %s for %s: fleet median %s, z = %s", p.value(r.Metric, mean), word, p.file.Product, fmtNum(med), fmtNum(z))
	return e.transitionUses(p, d, r, ch, last, mean, from, last, msg, []string{r.Metric}, r.Phase)
}

// fleet is one fleet rule's distribution: per device its latest segment mean and when.
// It holds at most max devices: past that, the devices whose ID hashes lowest (a
// bottom-k sample: uniform over devices, the same after a restart). Median and MAD are
// cached and recomputed after 1/64 of the devices changed or window/96 passed, so a
// judgment costs O(1) amortized over O(n log n) recomputations.
type fleet struct {
	max    int
	window time.Duration
	byID   map[string]*fleetEntry
	heap   entryHeap // max-heap by hash: the first to leave the sample

	med, mad   float64
	n          int
	computedAt time.Time
	dirty      int
	valid      bool
	scratch    []float64
}

type fleetEntry struct {
	device string
	hash   uint64
	mean   float64
	at     time.Time
	idx    int
}

func newFleet(max int, window time.Duration) *fleet {
	return &fleet{max: max, window: window, byID: map[string]*fleetEntry{}}
}

func (f *fleet) update(device string, mean float64, at time.Time) {
	f.dirty++
	if e := f.byID[device]; e != nil {
		e.mean, e.at = mean, at
		return
	}
	h := hashID(device)
	if len(f.byID) >= f.max {
		if h >= f.heap[0].hash {
			return // outside the sample
		}
		out := heap.Pop(&f.heap).(*fleetEntry)
		delete(f.byID, out.device)
	}
	e := &fleetEntry{device: device, hash: h, mean: mean, at: at}
	heap.Push(&f.heap, e)
	f.byID[device] = e
}

// stats returns the median and MAD of the in-window means and how many there are.
func (f *fleet) stats(now time.Time) (med, mad float64, n int) {
	if f.valid && f.dirty <= len(f.byID)/64 && now.Sub(f.computedAt) < f.window/96 {
		return f.med, f.mad, f.n
	}
	cutoff := now.Add(-f.window)
	f.scratch = f.scratch[:0]
	for id, e := range f.byID {
		if e.at.Before(cutoff) {
			heap.Remove(&f.heap, e.idx)
			delete(f.byID, id)
			continue
		}
		f.scratch = append(f.scratch, e.mean)
	}
	f.n, f.computedAt, f.dirty, f.valid = len(f.scratch), now, 0, true
	if f.n == 0 {
		f.med, f.mad = 0, 0
		return 0, 0, 0
	}
	f.med = median(f.scratch)
	for i, v := range f.scratch {
		f.scratch[i] = math.Abs(v - f.med)
	}
	f.mad = median(f.scratch)
	return f.med, f.mad, f.n
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

type entryHeap []*fleetEntry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].hash > h[j].hash }
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *entryHeap) Push(x any) {
	e := x.(*fleetEntry)
	e.idx = len(*h)
	*h = append(*h, e)
}

func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// hashID is FNV-1a: deterministic, so the sample survives a restart. Device IDs are
// issued by the security service, not chosen by devices, so no one steers the sample.
func hashID(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}
