package product_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func iv(from, until string) product.Interval {
	return product.Interval{From: utc(from), Until: utc(until)}
}

func win(days []string, start, length, zone string) product.MaintenanceWindow {
	return product.MaintenanceWindow{Days: days, Start: start, Length: length, TimeZone: zone}
}

var everyDay = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}

type intervalCase struct {
	name        string
	w           product.MaintenanceWindow
	from, until string
	want        []product.Interval
}

func runIntervals(t *testing.T, cases []intervalCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.w.Intervals(utc(c.from), utc(c.until))
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("%v.Intervals(%s, %s) (-want +got):\n%s", c.w, c.from, c.until, d)
			}
			for _, x := range got {
				if x.From.Location() != time.UTC || x.Until.Location() != time.UTC {
					t.Errorf("interval %v is not in UTC", x)
				}
			}
		})
	}
}

func TestIntervals_Table(t *testing.T) {
	runIntervals(t, []intervalCase{
		{"weekdays UTC", win([]string{"mon", "wed"}, "02:00", "3h", "UTC"), "2026-06-01T00:00:00Z", "2026-06-08T00:00:00Z",
			[]product.Interval{iv("2026-06-01T02:00:00Z", "2026-06-01T05:00:00Z"), iv("2026-06-03T02:00:00Z", "2026-06-03T05:00:00Z")}},
		{"Berlin winter is UTC+1", win([]string{"mon"}, "02:00", "3h", "Europe/Berlin"), "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z",
			[]product.Interval{iv("2026-01-05T01:00:00Z", "2026-01-05T04:00:00Z")}},
		{"Berlin summer is UTC+2", win([]string{"mon"}, "02:00", "3h", "Europe/Berlin"), "2026-07-06T00:00:00Z", "2026-07-07T00:00:00Z",
			[]product.Interval{iv("2026-07-06T00:00:00Z", "2026-07-06T03:00:00Z")}},
		{"local day differs from the UTC day", win([]string{"tue"}, "01:00", "1h", "Asia/Tokyo"), "2026-06-01T00:00:00Z", "2026-06-03T00:00:00Z",
			// Tuesday 01:00 in Tokyo is Monday 16:00 UTC.
			[]product.Interval{iv("2026-06-01T16:00:00Z", "2026-06-01T17:00:00Z")}},
		{"a window open at from is included", win([]string{"mon"}, "02:00", "3h", "UTC"), "2026-06-01T04:00:00Z", "2026-06-01T12:00:00Z",
			[]product.Interval{iv("2026-06-01T02:00:00Z", "2026-06-01T05:00:00Z")}},
		{"a window that ended at from is not", win([]string{"mon"}, "02:00", "3h", "UTC"), "2026-06-01T05:00:00Z", "2026-06-01T12:00:00Z", nil},
		{"a window starting at until is not", win([]string{"mon"}, "02:00", "3h", "UTC"), "2026-06-01T00:00:00Z", "2026-06-01T02:00:00Z", nil},
		{"invalid window has none", win([]string{"mon"}, "25:00", "3h", "UTC"), "2026-06-01T00:00:00Z", "2026-06-08T00:00:00Z", nil},
		{"empty range has none", win(everyDay, "02:00", "3h", "UTC"), "2026-06-01T00:00:00Z", "2026-06-01T00:00:00Z", nil},
	})
}

func TestIntervals_MidnightCrossing(t *testing.T) {
	runIntervals(t, []intervalCase{
		{"friday night into saturday, asked on saturday", win([]string{"fri"}, "23:00", "3h", "UTC"), "2026-06-06T00:00:00Z", "2026-06-06T12:00:00Z",
			[]product.Interval{iv("2026-06-05T23:00:00Z", "2026-06-06T02:00:00Z")}},
		{"sunday night into monday of the next week", win([]string{"sun"}, "22:30", "4h", "Europe/Berlin"), "2026-06-07T00:00:00Z", "2026-06-09T00:00:00Z",
			[]product.Interval{iv("2026-06-07T20:30:00Z", "2026-06-08T00:30:00Z")}},
	})
}

func TestIntervals_EveryDay(t *testing.T) {
	runIntervals(t, []intervalCase{
		{"three nights", win(everyDay, "02:00", "1h", "UTC"), "2026-06-01T00:00:00Z", "2026-06-04T00:00:00Z",
			[]product.Interval{iv("2026-06-01T02:00:00Z", "2026-06-01T03:00:00Z"), iv("2026-06-02T02:00:00Z", "2026-06-02T03:00:00Z"), iv("2026-06-03T02:00:00Z", "2026-06-03T03:00:00Z")}},
		{"24 hours every day is one interval", win(everyDay, "00:00", "24h", "UTC"), "2026-06-01T12:00:00Z", "2026-06-03T12:00:00Z",
			[]product.Interval{iv("2026-06-01T00:00:00Z", "2026-06-04T00:00:00Z")}},
		// The spring-forward day has 23 hours: a 24-hour window overlaps the next day's by
		// an hour; the intervals are merged, never overlapping.
		{"24 hours every day across spring forward", win(everyDay, "12:00", "24h", "Europe/Berlin"), "2026-03-28T12:00:00Z", "2026-03-29T12:00:00Z",
			[]product.Interval{iv("2026-03-28T11:00:00Z", "2026-03-30T10:00:00Z")}},
	})
}

// Europe/Berlin: 2026-03-29 02:00 CET jumps to 03:00 CEST (01:00 UTC); 2026-10-25 03:00
// CEST falls back to 02:00 CET (01:00 UTC).
func TestIntervals_DSTBerlin(t *testing.T) {
	runIntervals(t, []intervalCase{
		{"start in the gap moves to its end", win([]string{"sun"}, "02:30", "1h", "Europe/Berlin"), "2026-03-29T00:00:00Z", "2026-03-30T00:00:00Z",
			[]product.Interval{iv("2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z")}},
		{"start before the gap keeps its elapsed length", win([]string{"sun"}, "01:30", "1h", "Europe/Berlin"), "2026-03-29T00:00:00Z", "2026-03-30T00:00:00Z",
			[]product.Interval{iv("2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z")}},
		{"the week before and after", win([]string{"sun"}, "04:00", "1h", "Europe/Berlin"), "2026-03-22T00:00:00Z", "2026-03-30T00:00:00Z",
			[]product.Interval{iv("2026-03-22T03:00:00Z", "2026-03-22T04:00:00Z"), iv("2026-03-29T02:00:00Z", "2026-03-29T03:00:00Z")}},
		{"repeated hour: the first occurrence", win([]string{"sun"}, "02:30", "1h", "Europe/Berlin"), "2026-10-25T00:00:00Z", "2026-10-26T00:00:00Z",
			[]product.Interval{iv("2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z")}},
		{"after fall back is UTC+1", win([]string{"sun"}, "04:00", "1h", "Europe/Berlin"), "2026-10-25T00:00:00Z", "2026-10-26T00:00:00Z",
			[]product.Interval{iv("2026-10-25T03:00:00Z", "2026-10-25T04:00:00Z")}},
	})
}

// America/New_York: 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00 UTC); 2026-11-01 02:00
// EDT falls back to 01:00 EST (06:00 UTC).
func TestIntervals_DSTNewYork(t *testing.T) {
	runIntervals(t, []intervalCase{
		{"start in the gap moves to its end", win([]string{"sun"}, "02:15", "30m", "America/New_York"), "2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z",
			[]product.Interval{iv("2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z")}},
		{"before spring forward is UTC-5", win([]string{"sat"}, "02:15", "30m", "America/New_York"), "2026-03-07T00:00:00Z", "2026-03-08T00:00:00Z",
			[]product.Interval{iv("2026-03-07T07:15:00Z", "2026-03-07T07:45:00Z")}},
		{"repeated hour: the first occurrence", win([]string{"sun"}, "01:30", "1h", "America/New_York"), "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z",
			[]product.Interval{iv("2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z")}},
		{"after fall back is UTC-5", win([]string{"sun"}, "03:00", "1h", "America/New_York"), "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z",
			[]product.Interval{iv("2026-11-01T08:00:00Z", "2026-11-01T09:00:00Z")}},
	})
}

func TestMaintenanceWindow_RejectsInvalid(t *testing.T) {
	for _, c := range []struct {
		name  string
		w     product.MaintenanceWindow
		field string
	}{
		{"no days", win(nil, "02:00", "3h", "UTC"), "maintenance_window.days"},
		{"unknown day", win([]string{"monday"}, "02:00", "3h", "UTC"), "maintenance_window.days[0]"},
		{"a day twice", win([]string{"mon", "mon"}, "02:00", "3h", "UTC"), "maintenance_window.days[1]"},
		{"hour 24", win([]string{"mon"}, "24:00", "3h", "UTC"), "maintenance_window.start"},
		{"no leading zero", win([]string{"mon"}, "2:00", "3h", "UTC"), "maintenance_window.start"},
		{"signed minute", win([]string{"mon"}, "02:+5", "3h", "UTC"), "maintenance_window.start"},
		{"too short", win([]string{"mon"}, "02:00", "14m", "UTC"), "maintenance_window.length"},
		{"too long", win([]string{"mon"}, "02:00", "24h1s", "UTC"), "maintenance_window.length"},
		{"not a duration", win([]string{"mon"}, "02:00", "3", "UTC"), "maintenance_window.length"},
		{"unknown zone", win([]string{"mon"}, "02:00", "3h", "Mars/Olympus"), "maintenance_window.time_zone"},
		{"server's local zone", win([]string{"mon"}, "02:00", "3h", "Local"), "maintenance_window.time_zone"},
		{"no zone", win([]string{"mon"}, "02:00", "3h", ""), "maintenance_window.time_zone"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.w.Validate()
			pe, ok := errors.AsType[*problem.Error](err)
			if !ok || pe.Field != c.field {
				t.Fatalf("Validate(%v) = %v, want a problem for %s", c.w, err, c.field)
			}
		})
	}
	for _, w := range []product.MaintenanceWindow{
		win([]string{"mon"}, "00:00", "15m", "UTC"), win(everyDay, "23:59", "24h", "Europe/Berlin"),
	} {
		if err := w.Validate(); err != nil {
			t.Errorf("Validate(%v) = %v, want nil", w, err)
		}
	}
}

func TestParseMaintenanceWindow(t *testing.T) {
	got, err := product.ParseMaintenanceWindow("mon,tue,wed,thu,fri 02:00 180m Europe/Berlin")
	want := win([]string{"mon", "tue", "wed", "thu", "fri"}, "02:00", "3h0m0s", "Europe/Berlin")
	if err != nil || !cmp.Equal(got, want) {
		t.Errorf("ParseMaintenanceWindow = %v, %v, want %v", got, err, want)
	}
	if got, err := product.ParseMaintenanceWindow("daily 00:00 24h UTC"); err != nil || len(got.Days) != 7 {
		t.Errorf("ParseMaintenanceWindow(daily) = %v, %v", got, err)
	}
	for _, s := range []string{"", "mon 02:00 3h", "mon 02:00 3h UTC extra", "mon 02:00 1m UTC"} {
		if _, err := product.ParseMaintenanceWindow(s); err == nil {
			t.Errorf("ParseMaintenanceWindow(%q) = nil error", s)
		}
	}
}
