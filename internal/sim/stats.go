package sim

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Stats is a snapshot of a simulation.
type Stats struct {
	At time.Time `json:"at"`
	// Devices is how many were asked for; Registered how many are registered, claimed and
	// in the group; Started how many run.
	Devices    int `json:"devices"`
	Registered int `json:"registered"`
	Started    int `json:"started"`
	// Attested devices attested at least once; Certified ones hold a certificate now.
	Attested  int `json:"attested"`
	Certified int `json:"certified"`
	// What the devices do now: getting a certificate, waiting in the update long-poll,
	// checking or installing an update, waiting to retry after a failure.
	Attesting int `json:"attesting"`
	Waiting   int `json:"waiting"`
	Updating  int `json:"updating"`
	Backoff   int `json:"backoff"`
	// GaveUp is always 0: a simulated device retries for as long as it runs.
	GaveUp int `json:"gave_up"`
	// Apps and OSes count the devices running each version ("none": no image).
	Apps map[string]int `json:"apps"`
	OSes map[string]int `json:"oses"`
	// Totals since the start.
	Attestations   int64 `json:"attestations"`
	Refusals       int64 `json:"refusals"`
	Retries        int64 `json:"retries"`
	Unavailable    int64 `json:"unavailable"` // answers 503 or 429
	Installs       int64 `json:"installs"`
	StatesSent     int64 `json:"update_states_sent"`
	ReportsSent    int64 `json:"error_reports_sent"`
	ReportsDropped int64 `json:"reports_dropped"`
	// Targets says, per assigned target, when the devices held its verified assignment.
	Targets map[string]TargetStats `json:"targets"`
	// Storm is how the devices came back from the last Expire; nil before the first.
	Storm *StormStats `json:"storm,omitempty"`
	// Cloud is what the devices did with the cloud; nil without Config.Cloud.
	Cloud *CloudStats `json:"cloud,omitempty"`
}

// TargetStats is when devices held a target's verified assignment: the first, the median,
// the 99th percentile and the last of them. The update latency of a deployment made at t is
// P50 - t and P99 - t, and Last - t once Devices is the whole fleet.
type TargetStats struct {
	Devices int       `json:"devices"`
	First   time.Time `json:"first"`
	P50     time.Time `json:"p50"`
	P99     time.Time `json:"p99"`
	Last    time.Time `json:"last"`
}

// hold records that a device holds target's verified assignment at t.
func (s *Sim) hold(target string, t time.Time) {
	s.mu.Lock()
	s.held[target] = append(s.held[target], t)
	s.mu.Unlock()
}

// Stats returns a snapshot. It reads every device (cheap next to what they do).
func (s *Sim) Stats() Stats {
	now := s.now()
	st := Stats{At: now.UTC(), Devices: s.cfg.Devices, Apps: map[string]int{}, OSes: map[string]int{}, Targets: map[string]TargetStats{},
		Registered: int(s.registered.Load()), Attestations: s.attestations.Load(), Refusals: s.refusals.Load(),
		Retries: s.retries.Load(), Unavailable: s.unavailable.Load(), Installs: s.installs.Load(),
		StatesSent: s.statesSent.Load(), ReportsSent: s.reportsSent.Load(), ReportsDropped: s.reportsDropped.Load()}
	s.mu.Lock()
	devices := s.devices
	held := make(map[string][]time.Time, len(s.held))
	for t, ts := range s.held {
		held[t] = slices.Clone(ts)
	}
	if s.storm.seq.Load() > 0 {
		st.Storm = &StormStats{At: s.storm.at.UTC(), Expired: s.storm.expired, Devices: len(s.storm.times)}
		if n := len(s.storm.times); n > 0 {
			// Appended in the order the devices recovered: sorted already.
			st.Storm.P50, st.Storm.P99, st.Storm.Last = s.storm.times[percentile(n, 50)].UTC(), s.storm.times[percentile(n, 99)].UTC(), s.storm.times[n-1].UTC()
		}
	}
	s.mu.Unlock()
	for _, d := range devices {
		switch phase(d.phase.Load()) {
		case phaseStarting:
			continue
		case phaseAttesting:
			st.Attesting++
		case phaseWaiting:
			st.Waiting++
		case phaseUpdating:
			st.Updating++
		case phaseBackoff:
			st.Backoff++
		}
		st.Started++
		if d.attested.Load() {
			st.Attested++
		}
		if c := d.cert.Load(); c != nil && now.Before(c.notAfter) {
			st.Certified++
		}
		st.Apps[version(d.app.Load())]++
		st.OSes[version(d.os.Load())]++
	}
	st.Cloud = s.cloudStats(devices)
	for t, ts := range held {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
		st.Targets[t] = TargetStats{Devices: len(ts), First: ts[0].UTC(), P50: ts[percentile(len(ts), 50)].UTC(),
			P99: ts[percentile(len(ts), 99)].UTC(), Last: ts[len(ts)-1].UTC()}
	}
	return st
}

// percentile is the index of the p-th percentile of n sorted values (nearest rank).
func percentile(n, p int) int {
	i := (n*p + 99) / 100
	return min(max(i-1, 0), n-1)
}

func version(im *runImage) string {
	if im == nil {
		return "none"
	}
	return im.version
}

// Line is the progress line: how many devices are where, and on which app version.
func (st Stats) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "devices %d registered, %d/%d started, %d attested, %d with a certificate; %d waiting, %d updating, %d attesting, %d backing off; gave up %d",
		st.Registered, st.Started, st.Devices, st.Attested, st.Certified, st.Waiting, st.Updating, st.Attesting, st.Backoff, st.GaveUp)
	vs := make([]string, 0, len(st.Apps))
	for v := range st.Apps {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	for i, v := range vs {
		sep := "; app "
		if i > 0 {
			sep = ", "
		}
		fmt.Fprintf(&b, "%s%s: %d", sep, v, st.Apps[v])
	}
	if c := st.Cloud; c != nil {
		fmt.Fprintf(&b, "; cloud %d connected, %d messages sent, %d diagnostics answered", c.Connected, c.TelemetrySent, c.DiagnosticsAnswered)
	}
	return b.String()
}
