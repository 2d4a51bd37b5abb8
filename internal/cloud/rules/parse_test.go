package rules

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const head = `version: 1
product: DW100
metrics:
  drying_temp: {unit: Cel}
  rinse_agent: {unit: "%"}
rules:
`

// TestParse_Errors: each problem is reported at its line ("file:line: ...").
func TestParse_Errors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src string
		line      int
		want      string
	}{
		{"bad version", "version: 2\nproduct: DW100\nmetrics: {a: {unit: Cel}}\nrules: [{name: x, kind: missing, after: 1h}]\n", 1, "version 2 is not supported"},
		{"version not a number", "version: one\nproduct: DW100\nmetrics: {a: {unit: Cel}}\nrules: [{name: x, kind: missing, after: 1h}]\n", 1, "version must be a whole number"},
		{"missing version", "product: DW100\nmetrics: {a: {unit: Cel}}\nrules: [{name: x, kind: missing, after: 1h}]\n", 1, `missing field "version"`},
		{"unknown top field", "version: 1\nproduct: DW100\nmetric: {}\nmetrics: {a: {unit: Cel}}\nrules: [{name: x, kind: missing, after: 1h}]\n", 3, `unknown field "metric"`},
		{"unknown kind", head + "  - name: x\n    kind: avg\n", 8, `unknown kind "avg"`},
		{"missing kind", head + "  - name: x\n    after: 1h\n", 7, `missing field "kind"`},
		{"unknown field", head + "  - name: x\n    kind: missing\n    after: 1h\n    afterr: 2h\n", 10, `unknown field "afterr"`},
		{"field of another kind", head + "  - name: x\n    kind: threshold\n    when: drying_temp > 1\n    z: 3\n", 10, `unknown field "z"`},
		{"bad expression", head + "  - name: x\n    kind: threshold\n    when: \"drying_temp >\"\n", 9, "rule x: when: unexpected token EOF"},
		{"unknown metric in expression", head + "  - name: x\n    kind: threshold\n    when: \"dryng_temp > 80\"\n", 9, "unknown name dryng_temp"},
		{"metric used as a string", head + "  - name: x\n    kind: threshold\n    when: \"drying_temp == 'hot'\"\n", 9, "invalid operation: == (mismatched types float64 and string)"},
		{"phase used as a number", head + "  - name: x\n    kind: threshold\n    when: \"phase > 3 && drying_temp > 1\"\n", 9, "mismatched types string and int"},
		{"not boolean", head + "  - name: x\n    kind: threshold\n    when: \"drying_temp + 1\"\n", 9, "expected bool"},
		{"unknown metric", head + "  - name: x\n    kind: fleet\n    metric: dry\n", 9, `unknown metric "dry"`},
		{"unknown action", head + "  - name: x\n    kind: missing\n    after: 1h\n    actions: [{diagnostics: self-test}, {page: oncall}]\n", 10, `unknown action "page" (known: diagnostics, notify, prompt, reserve-part, service-request)`},
		{"bad action argument", head + "  - name: x\n    kind: missing\n    after: 1h\n    actions:\n      - notify: everyone\n", 11, `action notify: notify "everyone"`},
		{"unknown part", head + "  - name: x\n    kind: missing\n    after: 1h\n    actions: [{reserve-part: HT-9}]\nwarranty: 2y\nparts: {HT-1: {description: heater}}\n", 10, `action reserve-part: part "HT-9" is not declared under parts:`},
		{"part without warranty", head + "  - name: x\n    kind: missing\n    after: 1h\n    actions: [{reserve-part: HT-1}]\nparts: {HT-1: {description: heater}}\n", 10, `the file declares no warranty`},
		{"bad part number", head + "  - name: x\n    kind: missing\n    after: 1h\n    actions: [{reserve-part: \"HT 1\"}]\n", 10, `action reserve-part: "HT 1" must be 1 to 64`},
		{"unknown consumable", head + "  - name: x\n    kind: missing\n    after: 1h\n    actions: [{prompt: salt}]\nconsumables:\n  rinse-agent: {buy_url: \"https://shop.example/ra\"}\n", 10, `action prompt: consumable "salt" is not declared under consumables:`},
		{"empty service request", head + "  - name: x\n    kind: missing\n    after: 1h\n    actions: [{service-request: \"\"}]\n", 10, `action service-request: description must be 1 to 200 bytes`},
		{"bad warranty", head + "  - name: x\n    kind: missing\n    after: 1h\nwarranty: 24 months\n", 10, `warranty "24 months" must be a whole number and a unit d, w or y`},
		{"warranty too long", head + "  - name: x\n    kind: missing\n    after: 1h\nwarranty: 31y\n", 10, `longer than 30y`},
		{"buy_url not https", head + "  - name: x\n    kind: missing\n    after: 1h\nconsumables:\n  rinse-agent: {buy_url: \"http://shop.example/ra\"}\n", 11, `consumable rinse-agent: buy_url: "http://shop.example/ra" must be an absolute https URL`},
		{"buy_url with user", head + "  - name: x\n    kind: missing\n    after: 1h\nconsumables:\n  rinse-agent: {buy_url: \"https://a:b@shop.example/\"}\n", 11, `without user information`},
		{"consumable without buy_url", head + "  - name: x\n    kind: missing\n    after: 1h\nconsumables:\n  rinse-agent: {}\n", 11, `missing field "buy_url"`},
		{"part without description", head + "  - name: x\n    kind: missing\n    after: 1h\nparts:\n  HT-1: {descr: heater}\n", 11, `unknown field "descr"`},
		{"bad part name", head + "  - name: x\n    kind: missing\n    after: 1h\nparts:\n  \"HT/1\": {description: heater}\n", 11, `parts: name "HT/1" must be`},
		{"duplicate rule", head + "  - name: x\n    kind: missing\n    after: 1h\n  - name: x\n    kind: missing\n    after: 2h\n", 10, `duplicate rule name "x" (first at line 7)`},
		{"duplicate key", head + "  - name: x\n    kind: missing\n    after: 1h\n    after: 2h\n", 10, `duplicate field "after"`},
		{"z out of range", head + "  - name: x\n    kind: fleet\n    metric: drying_temp\n    z: 0.5\n", 10, "z 0.5 is out of range (1 to 100)"},
		{"clear_z above z", head + "  - name: x\n    kind: fleet\n    metric: drying_temp\n    z: 3\n    clear_z: 4\n", 11, "clear_z 4 is out of range"},
		{"min_devices out of range", head + "  - name: x\n    kind: fleet\n    metric: drying_temp\n    min_devices: 1\n", 10, "min_devices 1 is out of range"},
		{"window out of range", head + "  - name: x\n    kind: fleet\n    metric: drying_temp\n    window: 90d\n", 10, `window "90d" must be a duration`},
		{"window too long", head + "  - name: x\n    kind: fleet\n    metric: drying_temp\n    window: 800h\n", 10, "window 800h0m0s is out of range"},
		{"after too short", head + "  - name: x\n    kind: missing\n    after: 1s\n", 9, "after 1s is out of range"},
		{"sustained unit", head + "  - name: x\n    kind: fleet\n    metric: drying_temp\n    sustained: 2 samples\n", 10, "a fleet rule counts cycles, not samples"},
		{"sustained count", head + "  - name: x\n    kind: threshold\n    when: drying_temp > 1\n    sustained: 0 samples\n", 10, "out of range (1 to 1000 samples)"},
		{"rate without limits", head + "  - name: x\n    kind: rate\n    metric: drying_temp\n", 7, "a rate rule needs above, below or both"},
		{"rate limits crossed", head + "  - name: x\n    kind: rate\n    metric: drying_temp\n    above: 1\n    below: 2\n", 11, "below (2) must be less than above (1)"},
		{"severity", head + "  - name: x\n    kind: missing\n    after: 1h\n    severity: urgent\n", 10, `severity "urgent" must be info, warning or critical`},
		{"bad rule name", head + "  - name: X_1\n    kind: missing\n    after: 1h\n", 7, `rule name "X_1"`},
		{"reserved metric", "version: 1\nproduct: DW100\nmetrics:\n  phase: {unit: Cel}\nrules: [{name: x, kind: missing, after: 1h}]\n", 4, `metric name "phase" is reserved`},
		{"metric without unit", "version: 1\nproduct: DW100\nmetrics:\n  a: {label: x}\nrules: [{name: x, kind: missing, after: 1h}]\n", 4, `missing field "unit"`},
		{"alias", "version: 1\nproduct: DW100\nmetrics: &m {a: {unit: Cel}}\nrules: [{name: x, kind: missing, after: 1h}]\n", 3, "anchors and aliases are not allowed"},
		{"custom tag", "version: 1\nproduct: !!binary RFcxMDA=\nmetrics: {a: {unit: Cel}}\nrules: [{name: x, kind: missing, after: 1h}]\n", 2, "tag !!binary is not allowed"},
		{"two documents", "version: 1\n---\nversion: 1\n", 2, "more than one YAML document"},
		{"syntax", "version: 1\nproduct: [\n", 2, "invalid YAML"},
		{"number not finite", head + "  - name: x\n    kind: rate\n    metric: drying_temp\n    above: .inf\n", 10, "above must be a finite number"},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.src), "dw100.yaml", testActions())
			pe, ok := errors.AsType[*ParseError](err)
			if !ok {
				t.Fatalf("Parse() = %v, want a *ParseError", err)
			}
			prefix := fmt.Sprintf("dw100.yaml:%d: ", tt.line)
			for _, p := range pe.Problems {
				if s := p.String(); strings.HasPrefix(s, prefix) && strings.Contains(s, tt.want) {
					return
				}
			}
			t.Errorf("Parse() =\n%v\nwant a line %q...%q", err, prefix, tt.want)
		})
	}
}

// TestParse_ReportsEveryProblem: one Parse lists all problems, in line order.
func TestParse_ReportsEveryProblem(t *testing.T) {
	t.Parallel()
	src := head + "  - name: a\n    kind: nope\n  - name: b\n    kind: missing\n    after: 1y\n  - name: a\n    kind: threshold\n    when: \"x > 1\"\n"
	_, err := Parse([]byte(src), "f.yaml", nil)
	pe, ok := errors.AsType[*ParseError](err)
	if !ok || len(pe.Problems) != 4 {
		t.Fatalf("Parse() = %v, want 4 problems", err)
	}
	for i := 1; i < len(pe.Problems); i++ {
		if pe.Problems[i].Line < pe.Problems[i-1].Line {
			t.Errorf("problems out of line order: %v", err)
		}
	}
}

// TestParse_RefusesUnboundedExpressions: nothing in a condition may loop, allocate with
// its input, call out or read the clock.
func TestParse_RefusesUnboundedExpressions(t *testing.T) {
	t.Parallel()
	for _, cond := range []string{
		`len(1..1000000000) > 0 && drying_temp > 1`,
		`drying_temp in 1..100000000`,
		`all(1..10, {# > drying_temp})`,
		`len(repeat("x", 1000000000)) > drying_temp`,
		`now().Year() > 2000 && drying_temp > 1`,
		`phase matches "^(a+)+$" && drying_temp > 1`,
		`fromJSON("[1]") != nil && drying_temp > 1`,
		`let x = drying_temp; x > 1`,
		`{"a": drying_temp}.a > 1`,
		`sum([drying_temp]) > 1`,
		`drying_temp > 1; drying_temp > 2`,
		`drying_temp > ` + strings.Repeat("1+", 200) + `1`,
		`drying_temp > ` + strings.Repeat("1", MaxExprBytes),
	} {
		src := head + fmt.Sprintf("  - name: x\n    kind: threshold\n    when: %q\n", cond)
		if _, err := Parse([]byte(src), "f.yaml", nil); err == nil || !strings.Contains(err.Error(), "f.yaml:9: rule x: when:") {
			t.Errorf("condition %q: Parse() = %v, want it refused at line 9", cond, err)
		}
	}
	// What is allowed compiles.
	for _, cond := range []string{
		`drying_temp > 85 && phase == "drying"`,
		`abs(drying_temp - 65) > max(5, rinse_agent / 10) || phase in ["wash", "rinse"]`,
		`phase startsWith "dry" ? round(drying_temp) >= 90 : drying_temp ** 2 > 8100`,
		`not (cycle contains "test") and floor(drying_temp) >= 2`,
	} {
		src := head + fmt.Sprintf("  - name: x\n    kind: threshold\n    when: %q\n", cond)
		if _, err := Parse([]byte(src), "f.yaml", nil); err != nil {
			t.Errorf("condition %q: Parse() = %v", cond, err)
		}
	}
}

func TestParse_Limits(t *testing.T) {
	t.Parallel()
	big := head + strings.Repeat("# padding\n", MaxFileBytes/10+1)
	if _, err := Parse([]byte(big), "f.yaml", nil); err == nil || !strings.Contains(err.Error(), "more than 262144") {
		t.Errorf("a %d-byte file: Parse() = %v", len(big), err)
	}
	var b strings.Builder
	b.WriteString(head)
	for i := range MaxRules + 1 {
		fmt.Fprintf(&b, "  - {name: r%d, kind: missing, after: 1h}\n", i)
	}
	if _, err := Parse([]byte(b.String()), "f.yaml", nil); err == nil || !strings.Contains(err.Error(), "f.yaml:7: file holds 201 rules, more than 200") {
		t.Errorf("201 rules: Parse() = %v", err)
	}
}

// TestParse_Example: the DW100 example parses, with the rules the docs describe.
func TestParse_Example(t *testing.T) {
	t.Parallel()
	f := exampleFile(t)
	if f.Product != "DW100" || f.Version != 1 || len(f.Rules) != 4 {
		t.Fatalf("example = %+v", f)
	}
	h := f.Rules[0]
	if h.Kind != KindFleet || h.Metric != "drying_temp" || h.Phase != "drying" || h.Window != 24*time.Hour ||
		h.MinDevices != 10 || h.Z != 3.5 || h.ClearZ != 2 || h.Sustained != (Sustained{Count: 2}) || h.Direction != DirectionBoth {
		t.Errorf("heater rule = %+v", h)
	}
	if r := f.Rules[2]; r.When != "rinse_agent < 10" || r.ClearWhen != "rinse_agent > 50" {
		t.Errorf("rinse rule = %+v", r)
	}
	if r := f.Rules[3]; r.Kind != KindMissing || r.After != 2*time.Hour {
		t.Errorf("missing rule = %+v", r)
	}
}

// TestParse_Settings: the example's product settings are read, and a declaration after
// the rules that name it counts (the second pass).
func TestParse_Settings(t *testing.T) {
	t.Parallel()
	f := exampleFile(t)
	if f.Warranty != 2*Year || f.Consumables["rinse-agent"].BuyURL != "https://shop.example.com/dw100/rinse-agent" ||
		f.Parts["DW100-HTR-2"].Description != "drying heater element" {
		t.Errorf("settings = %+v", f.Settings)
	}
	src := head + "  - name: x\n    kind: missing\n    after: 1h\n    actions: [{reserve-part: HT-1}, {prompt: salt}]\nparts: {HT-1: {description: heater}}\nconsumables: {salt: {buy_url: \"https://s.example/salt\"}}\nwarranty: 104w\n"
	f2 := mustParse(t, src)
	if f2.Warranty != 104*7*Day {
		t.Errorf("warranty = %v", f2.Warranty)
	}
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{{"730d", 730 * Day}, {"1y", Year}, {"30y", 30 * Year}, {"2w", 14 * Day}} {
		if got, err := ParseWarranty(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseWarranty(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "0d", "2", "2y1d", "-1y", "1.5y", "24h", "100000d", " 2y"} {
		if _, err := ParseWarranty(in); err == nil {
			t.Errorf("ParseWarranty(%q) = nil error", in)
		}
	}
}
