package webui

import (
	"strings"
	"testing"
)

func TestBarChart_EscapesHostileLabels(t *testing.T) {
	t.Parallel()
	out := string(BarChart(Chart{Title: `</title><script>alert(1)</script>`, Unit: `"><img src=x>`,
		Points: []Point{{Label: `<img src=x onerror=alert(1)>`, Value: 2}, {Label: "ok", Value: 1}}}))
	for _, bad := range []string{"<script", "<img"} {
		if strings.Contains(out, bad) {
			t.Errorf("BarChart wrote %q unescaped:\n%s", bad, out)
		}
	}
	if n := strings.Count(out, `<g class="chart-bar">`); n != 2 {
		t.Errorf("BarChart drew %d bars, want 2", n)
	}
	if empty := string(BarChart(Chart{Title: "none"})); !strings.Contains(empty, "no data") {
		t.Errorf("BarChart(no points) = %s, want no data", empty)
	}
}
