package webui

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// Point is one bar of a chart.
type Point struct {
	Label string
	Value float64
}

// Chart is a titled series of bars.
type Chart struct {
	Title  string
	Points []Point
	// Max is the value of a full-height bar; 0 scales to the largest value.
	Max float64
	// Unit follows each value ("%").
	Unit string
}

// Chart geometry, in SVG user units.
const (
	chartWidth  = 640
	chartHeight = 180
	chartTop    = 16
	chartBottom = 28 // room for labels
)

// BarChart renders c as an inline SVG bar chart, server-side: no script, no inline style
// (CSP forbids both; colours come from the pages' style sheet: svg.chart, .chart-bar,
// .chart-axis, .chart-label, .chart-value, .chart-empty). It returns template.HTML, so it
// escapes every value it writes itself: a label or title is text a device or an owner
// may have influenced.
func BarChart(c Chart) template.HTML {
	esc := template.HTMLEscapeString
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" role="img" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg"><title>%s</title>`,
		chartWidth, chartHeight, esc(c.Title))
	maxV := c.Max
	if maxV <= 0 {
		for _, p := range c.Points {
			maxV = max(maxV, p.Value)
		}
	}
	n := len(c.Points)
	if n == 0 {
		fmt.Fprintf(&b, `<text class="chart-empty" x="%d" y="%d">no data</text></svg>`, chartWidth/2, chartHeight/2)
		return template.HTML(b.String()) //nolint:gosec // built from escaped values only
	}
	plot := chartHeight - chartTop - chartBottom
	slot := float64(chartWidth) / float64(n)
	bar := slot * 0.7
	fmt.Fprintf(&b, `<line class="chart-axis" x1="0" y1="%d" x2="%d" y2="%d"/>`, chartHeight-chartBottom, chartWidth, chartHeight-chartBottom)
	for i, p := range c.Points {
		h := 0.0
		if maxV > 0 {
			h = min(p.Value/maxV, 1) * float64(plot)
		}
		val := esc(Number(p.Value) + c.Unit)
		x := float64(i)*slot + (slot-bar)/2
		y := float64(chartHeight-chartBottom) - h
		fmt.Fprintf(&b, `<g class="chart-bar"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %s</title></rect>`,
			x, y, bar, h, esc(p.Label), val)
		if p.Value > 0 {
			fmt.Fprintf(&b, `<text class="chart-value" x="%.1f" y="%.1f">%s</text>`, x+bar/2, max(y-3, 10), val)
		}
		if n <= 16 || i%(n/8+1) == 0 {
			fmt.Fprintf(&b, `<text class="chart-label" x="%.1f" y="%d">%s</text>`, x+bar/2, chartHeight-chartBottom+16, esc(p.Label))
		}
		b.WriteString(`</g>`)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built from escaped values only
}

// Number formats a value with at most one decimal, and none for a whole number.
func Number(v float64) string {
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
}
