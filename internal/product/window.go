package product

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	// The zone database is embedded, so that a window's zone is valid on a bare machine and
	// on every replica alike (about 450 KB; the device agent does not link this package).
	_ "time/tzdata"

	"github.com/moat-iot/moat/internal/problem"
)

// MaintenanceWindow is when the devices of a group may install an update (issue 12): on
// the given days, from Start local time in TimeZone, for Length. Devices learn of new
// assignments at once and download them, but install only inside the window, unless the
// deployment ignores it (a security update).
//
// The window lasts Length of elapsed time from its start. A Start that does not exist on
// a day (it falls in the hour a DST change skips) moves to the first instant after the
// gap; a Start that exists twice (the hour a DST change repeats) is its first occurrence.
// A window may cross midnight: it belongs to the day it starts on.
type MaintenanceWindow struct {
	Days     []string `json:"days"`      // "mon" .. "sun", at least one, each once
	Start    string   `json:"start"`     // "HH:MM", 24-hour local time
	Length   string   `json:"length"`    // a Go duration, MinWindowLength to MaxWindowLength
	TimeZone string   `json:"time_zone"` // an IANA name ("Europe/Berlin", "UTC")
}

// Bounds of a window's length.
const (
	MinWindowLength = 15 * time.Minute
	MaxWindowLength = 24 * time.Hour
)

// WeekDays are the names of Days, Sunday first as time.Weekday counts them.
var WeekDays = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// Interval is one occurrence of a window, in UTC: From inclusive, Until exclusive.
type Interval struct {
	From  time.Time `json:"from"`
	Until time.Time `json:"until"`
}

// Validate reports every problem with the window.
func (w MaintenanceWindow) Validate() error {
	var v problem.Validation
	w.check(&v, "maintenance_window.")
	return v.Err()
}

func (w MaintenanceWindow) check(v *problem.Validation, prefix string) {
	if len(w.Days) == 0 || len(w.Days) > len(WeekDays) {
		v.Add(prefix+"days", "invalid_window_days", "days lists 1 to 7 days of mon, tue, wed, thu, fri, sat, sun")
	}
	seen := map[string]bool{}
	for i, d := range w.Days {
		switch {
		case !slices.Contains(WeekDays, d):
			v.Add(fmt.Sprintf("%sdays[%d]", prefix, i), "invalid_window_day", "%.16q is not one of mon, tue, wed, thu, fri, sat, sun", d)
		case seen[d]:
			v.Add(fmt.Sprintf("%sdays[%d]", prefix, i), "duplicate_window_day", "%s is listed twice", d)
		}
		seen[d] = true
	}
	if _, _, ok := parseClock(w.Start); !ok {
		v.Add(prefix+"start", "invalid_window_start", "start is a 24-hour local time HH:MM, 00:00 to 23:59")
	}
	if l, err := time.ParseDuration(w.Length); err != nil || l < MinWindowLength || l > MaxWindowLength {
		v.Add(prefix+"length", "invalid_window_length", "length is a duration from %s to %s, such as \"3h\"", MinWindowLength, MaxWindowLength)
	}
	if _, err := loadZone(w.TimeZone); err != nil {
		v.Add(prefix+"time_zone", "invalid_time_zone", "time_zone is an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"")
	}
}

// loadZone loads an IANA zone; "Local" and "" are refused, since they mean the server's
// own zone, which differs between replicas.
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" || len(name) > 64 {
		return nil, fmt.Errorf("time zone %.64q: not an IANA name", name)
	}
	return time.LoadLocation(name)
}

// parseClock parses "HH:MM".
func parseClock(s string) (h, m int, ok bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, 0, false
	}
	h, err1 := strconv.Atoi(s[:2])
	m, err2 := strconv.Atoi(s[3:])
	if err1 != nil || err2 != nil || s[0] == '+' || s[0] == '-' || s[3] == '+' || s[3] == '-' || h > 23 || m > 59 || h < 0 || m < 0 {
		return 0, 0, false
	}
	return h, m, true
}

// String is the window in the CLI's spelling: "mon,tue 02:00 3h0m0s Europe/Berlin".
func (w MaintenanceWindow) String() string {
	return strings.Join(w.Days, ",") + " " + w.Start + " " + w.Length + " " + w.TimeZone
}

// ParseMaintenanceWindow parses the CLI's spelling, "DAYS HH:MM LENGTH ZONE": DAYS are
// comma-separated ("mon,tue,wed") or "daily". The result is validated.
func ParseMaintenanceWindow(s string) (MaintenanceWindow, error) {
	f := strings.Fields(s)
	if len(f) != 4 {
		return MaintenanceWindow{}, fmt.Errorf("maintenance window %q: want \"DAYS HH:MM LENGTH ZONE\", such as \"mon,tue 02:00 3h Europe/Berlin\"", s)
	}
	days := strings.Split(strings.ToLower(f[0]), ",")
	if f[0] == "daily" {
		days = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
	}
	w := MaintenanceWindow{Days: days, Start: f[1], Length: f[2], TimeZone: f[3]}
	if err := w.Validate(); err != nil {
		return MaintenanceWindow{}, err
	}
	if l, _ := time.ParseDuration(w.Length); l > 0 {
		w.Length = l.String() // one spelling of each length
	}
	return w, nil
}

// Intervals returns the occurrences of the window that overlap [from, until), in UTC,
// ascending; occurrences that overlap or touch (a 24-hour window every day) are merged,
// so the result never overlaps. An invalid window has no intervals.
func (w MaintenanceWindow) Intervals(from, until time.Time) []Interval {
	if w.Validate() != nil || !from.Before(until) {
		return nil
	}
	loc, _ := loadZone(w.TimeZone)
	hh, mm, _ := parseClock(w.Start)
	length, _ := time.ParseDuration(w.Length)
	days := map[time.Weekday]bool{}
	for _, d := range w.Days {
		days[time.Weekday(slices.Index(WeekDays, d))] = true
	}
	// A window is at most 24 h long, so one starting the local day before from may still
	// be open; start from there.
	first := from.In(loc)
	y, m, d := first.Date()
	day := time.Date(y, m, d-1, 12, 0, 0, 0, time.UTC) // a calendar day; noon keeps it clear of edges
	ly, lm, ld := until.In(loc).Date()
	last := time.Date(ly, lm, ld, 12, 0, 0, 0, time.UTC)
	var out []Interval
	for ; !day.After(last); day = day.AddDate(0, 0, 1) {
		if !days[day.Weekday()] {
			continue
		}
		s := localInstant(loc, day.Year(), day.Month(), day.Day(), hh, mm)
		e := s.Add(length)
		if !e.After(from) || !s.Before(until) {
			continue
		}
		iv := Interval{From: s.UTC(), Until: e.UTC()}
		if n := len(out); n > 0 && !iv.From.After(out[n-1].Until) {
			out[n-1].Until = maxTime(out[n-1].Until, iv.Until)
			continue
		}
		out = append(out, iv)
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// localInstant returns the first instant at which the wall clock in loc reads
// y-m-d hh:mm, or, when it never does (a DST gap), the first instant after the gap.
// time.Date leaves both cases unspecified, so the candidates are tried here.
func localInstant(loc *time.Location, y int, m time.Month, d, hh, mm int) time.Time {
	naive := time.Date(y, m, d, hh, mm, 0, 0, time.UTC)
	// The offsets in effect around the wall time: any transition near it lies between
	// the instant two days before and two days after (offsets are within ±14 h).
	var cands []time.Time
	for _, at := range []time.Time{naive.Add(-48 * time.Hour), naive, naive.Add(48 * time.Hour)} {
		_, off := at.In(loc).Zone()
		cands = append(cands, naive.Add(-time.Duration(off)*time.Second))
	}
	slices.SortFunc(cands, func(a, b time.Time) int { return a.Compare(b) })
	for _, c := range cands {
		if wall(c.In(loc)).Equal(naive) {
			return c
		}
	}
	// A gap: the first candidate whose wall clock is already past hh:mm lies after the
	// transition; the transition is where its zone starts.
	for _, c := range cands {
		if wall(c.In(loc)).After(naive) {
			start, _ := c.In(loc).ZoneBounds()
			if !start.IsZero() && !wall(start.In(loc)).Before(naive) {
				return start
			}
			return c
		}
	}
	return cands[len(cands)-1]
}

// wall is t's wall clock as a UTC time, for comparing wall clocks.
func wall(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
}
