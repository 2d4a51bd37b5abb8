package rules

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzParse: no input panics; an error is a *ParseError whose every problem names the
// file and a line; an accepted file holds only what Validate-like checks allow, and its
// conditions run on a sample without panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(kindsFile))
	f.Add([]byte(head + "  - name: x\n    kind: fleet\n    metric: drying_temp\n    sustained: 2 cycles\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data, "fuzz.yaml", testActions())
		if err != nil {
			pe, ok := errors.AsType[*ParseError](err)
			if !ok || len(pe.Problems) == 0 {
				t.Fatalf("Parse() = %v, want a *ParseError with problems", err)
			}
			for _, p := range pe.Problems {
				if p.File != "fuzz.yaml" || p.Line < 0 {
					t.Fatalf("problem %+v names no line", p)
				}
			}
			return
		}
		if file.Version != Version || !productRE.MatchString(file.Product) || len(file.Rules) == 0 ||
			len(file.Rules) > MaxRules || len(file.Metrics) == 0 || len(file.Metrics) > MaxMetrics {
			t.Fatalf("accepted file %+v", file)
		}
		for _, r := range file.Rules {
			if !ruleNameRE.MatchString(r.Name) || len(r.Actions) > MaxActions {
				t.Fatalf("accepted rule %+v", r)
			}
			if r.Kind == KindThreshold && r.when == nil {
				t.Fatalf("accepted threshold without a condition: %+v", r)
			}
			if r.Kind == KindFleet && (r.ClearZ >= r.Z || r.MinDevices < 3) {
				t.Fatalf("accepted fleet rule %+v", r)
			}
		}
		// The accepted rules run.
		c := &clock{now: t0}
		e := newTestEngine(t, c, nil, file)
		readings := map[string]float64{}
		for _, m := range file.Metrics {
			readings[m.Name] = 1
		}
		for i := range 3 {
			c.now = t0.Add(time.Duration(i) * time.Minute)
			e.Observe([]Sample{{Device: "d", Product: file.Product, Time: c.now, Cycle: "c" + strings.Repeat("1", i), Phase: "drying", Readings: readings}})
		}
		e.Tick(t0.Add(MaxDuration))
	})
}
