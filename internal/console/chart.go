package console

import (
	"time"

	"github.com/moat-iot/moat/internal/webui"
)

// Point and Chart are the shared chart types; webui.BarChart renders them (moved there
// so the owners' portal draws the same charts).
type (
	Point = webui.Point
	Chart = webui.Chart
)

// number formats a value with at most one decimal, and none for a whole number.
func number(v float64) string { return webui.Number(v) }

// perDay counts times per UTC day over the days days ending with end's day, oldest first.
func perDay(times []time.Time, end time.Time, days int) []Point {
	end = end.UTC().Truncate(24 * time.Hour)
	start := end.AddDate(0, 0, -(days - 1))
	pts := make([]Point, days)
	for i := range pts {
		pts[i].Label = start.AddDate(0, 0, i).Format("01-02")
	}
	for _, t := range times {
		d := int(t.UTC().Truncate(24*time.Hour).Sub(start) / (24 * time.Hour))
		if d >= 0 && d < days {
			pts[d].Value++
		}
	}
	return pts
}
