package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Fields by kind: a field of another kind is an error, so a typo or a misplaced z never
// goes unnoticed.
var (
	commonFields = []string{"name", "kind", "severity", "description", "actions", "clear_after"}
	kindFields   = map[Kind][]string{
		KindThreshold: {"when", "clear_when", "metric", "sustained"},
		KindRate:      {"metric", "phase", "above", "below", "max_gap", "sustained"},
		KindMissing:   {"after", "metric"},
		KindFleet:     {"metric", "phase", "window", "min_devices", "z", "clear_z", "min_spread", "direction", "sustained"},
	}
	kindRequired = map[Kind][]string{
		KindThreshold: {"when"},
		KindRate:      {"metric"},
		KindMissing:   {"after"},
		KindFleet:     {"metric"},
	}
)

// Defaults of a fleet rule and a rate rule.
const (
	DefaultWindow     = 24 * time.Hour
	DefaultMinDevices = 10
	DefaultZ          = 3.5
	DefaultMaxGap     = 10 * time.Minute
)

func (p *parser) rule(n *yaml.Node, metrics []Metric) *Rule {
	r := &Rule{Line: n.Line, Severity: SeverityWarning}
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, "a rule must be a mapping")
		return nil
	}
	// Read name and kind first: they decide which other fields are known.
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "name":
			r.Name, _ = p.str(v, "rule name")
		case "kind":
			s, _ := p.str(v, "kind")
			r.Kind = Kind(s)
		}
	}
	what := "rule"
	if r.Name != "" {
		what = fmt.Sprintf("rule %s", r.Name)
		if !ruleNameRE.MatchString(r.Name) {
			p.errf(n.Line, "rule name %q must be a lower-case letter, then up to 63 lower-case letters, digits or '-'", r.Name)
		}
	}
	specific, known := kindFields[r.Kind]
	if !known {
		line := n.Line
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "kind" {
				line = n.Content[i].Line
			}
		}
		if r.Kind == "" {
			p.errf(line, "%s: missing field \"kind\" (one of fleet, missing, rate, threshold)", what)
		} else {
			p.errf(line, "%s: unknown kind %q (one of fleet, missing, rate, threshold)", what, r.Kind)
		}
		return r
	}
	allowed := map[string]bool{}
	for _, f := range append(slices.Clone(commonFields), specific...) {
		allowed[f] = true
	}
	fields := p.mapping(n, what+" ("+string(r.Kind)+")", allowed, append([]string{"name"}, kindRequired[r.Kind]...))
	if fields == nil {
		return r
	}
	rp := ruleParser{parser: p, r: r, what: what, fields: fields, metrics: metrics}
	rp.common()
	switch r.Kind {
	case KindThreshold:
		rp.threshold()
	case KindRate:
		rp.rate()
	case KindMissing:
		rp.missing()
	case KindFleet:
		rp.fleet()
	}
	return r
}

type ruleParser struct {
	*parser
	r       *Rule
	what    string
	fields  map[string]*yaml.Node
	metrics []Metric
}

func (rp *ruleParser) common() {
	r, f := rp.r, rp.fields
	if n := f["severity"]; n != nil {
		if s, ok := rp.str(n, rp.what+": severity"); ok {
			switch Severity(s) {
			case SeverityInfo, SeverityWarning, SeverityCritical:
				r.Severity = Severity(s)
			default:
				rp.errf(n.Line, "%s: severity %q must be info, warning or critical", rp.what, s)
			}
		}
	}
	if n := f["description"]; n != nil {
		r.Description, _ = rp.text(n, rp.what+": description")
	}
	if n := f["clear_after"]; n != nil {
		r.ClearAfter, _ = rp.duration(n, rp.what+": clear_after", time.Minute, MaxDuration)
	}
	if n := f["actions"]; n != nil {
		r.Actions = rp.actionList(n)
	}
}

func (rp *ruleParser) actionList(n *yaml.Node) []Action {
	if n.Kind != yaml.SequenceNode {
		rp.errf(n.Line, "%s: actions must be a list such as [{diagnostics: heater-self-test}]", rp.what)
		return nil
	}
	if len(n.Content) > MaxActions {
		rp.errf(n.Line, "%s: %d actions, more than %d", rp.what, len(n.Content), MaxActions)
		return nil
	}
	var out []Action
	for _, an := range n.Content {
		if an.Kind != yaml.MappingNode || len(an.Content) != 2 || an.Content[1].Kind != yaml.ScalarNode {
			rp.errf(an.Line, "%s: an action must be one name with one argument, such as {diagnostics: heater-self-test}", rp.what)
			continue
		}
		name, arg := an.Content[0].Value, an.Content[1].Value
		check, ok := rp.actions[name]
		if !ok {
			rp.errf(an.Line, "%s: unknown action %q (known: %s)", rp.what, name, strings.Join(actionNames(rp.actions), ", "))
			continue
		}
		if check != nil {
			if err := check(arg); err != nil {
				rp.errf(an.Line, "%s: action %s: %v", rp.what, name, err)
				continue
			}
		}
		if slices.Contains(out, Action{Name: name, Arg: arg}) {
			rp.errf(an.Line, "%s: duplicate action %s: %s", rp.what, name, arg)
			continue
		}
		out = append(out, Action{Name: name, Arg: arg})
		if name == ActionReservePart || name == ActionPrompt {
			rp.refs = append(rp.refs, actionRef{line: an.Line, what: rp.what, name: name, arg: arg})
		}
	}
	return out
}

func actionNames(a Actions) []string {
	ns := make([]string, 0, len(a))
	for n := range a {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	if len(ns) == 0 {
		return []string{"none"}
	}
	return ns
}

// metric reads the metric field, which must name a declared metric.
func (rp *ruleParser) metric() {
	n := rp.fields["metric"]
	if n == nil {
		return
	}
	s, ok := rp.str(n, rp.what+": metric")
	if !ok {
		return
	}
	if !slices.ContainsFunc(rp.metrics, func(m Metric) bool { return m.Name == s }) {
		rp.errf(n.Line, "%s: unknown metric %q (declare it under metrics)", rp.what, s)
		return
	}
	rp.r.Metric = s
}

func (rp *ruleParser) phase() {
	if n := rp.fields["phase"]; n != nil {
		if s, ok := rp.str(n, rp.what+": phase"); ok {
			if !telemetry.ValidName(s) {
				rp.errf(n.Line, "%s: phase %q must be a lower-case letter, then up to 63 lower-case letters, digits or '_'", rp.what, s)
			}
			rp.r.Phase = s
		}
	}
}

var countRE = regexp.MustCompile(`^([0-9]{1,9}) +([a-z]+)$`)

// sustained reads "5m" or "N <unit>", where unit is samples (threshold, rate) or cycles
// (fleet).
func (rp *ruleParser) sustained(unit string) {
	n := rp.fields["sustained"]
	if n == nil {
		return
	}
	s, ok := rp.str(n, rp.what+": sustained")
	if !ok {
		return
	}
	if m := countRE.FindStringSubmatch(s); m != nil {
		c, _ := strconv.Atoi(m[1])
		if m[2] != unit && m[2] != strings.TrimSuffix(unit, "s") {
			rp.errf(n.Line, "%s: sustained %q: a %s rule counts %s, not %s", rp.what, s, rp.r.Kind, unit, m[2])
			return
		}
		if c < 1 || c > MaxSustainedCount {
			rp.errf(n.Line, "%s: sustained %q is out of range (1 to %d %s)", rp.what, s, MaxSustainedCount, unit)
			return
		}
		rp.r.Sustained = Sustained{Count: c}
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		rp.errf(n.Line, "%s: sustained %q must be a duration such as 5m or a count such as \"2 %s\"", rp.what, s, unit)
		return
	}
	if d <= 0 || d > MaxDuration {
		rp.errf(n.Line, "%s: sustained %s is out of range (more than 0s, at most %s)", rp.what, d, MaxDuration)
		return
	}
	rp.r.Sustained = Sustained{Duration: d}
}

func (rp *ruleParser) expression(field string) *condition {
	n := rp.fields[field]
	if n == nil {
		return nil
	}
	s, ok := rp.str(n, rp.what+": "+field)
	if !ok {
		return nil
	}
	c, err := compileCondition(s, rp.metrics)
	if err != nil {
		rp.errf(n.Line, "%s: %s: %v", rp.what, field, err)
		return nil
	}
	return c
}

func (rp *ruleParser) threshold() {
	r := rp.r
	rp.metric()
	rp.sustained("samples")
	r.when = rp.expression("when")
	r.clearWhen = rp.expression("clear_when")
	if r.when != nil {
		r.When = r.when.src
		r.uses = slices.Clone(r.when.uses)
		if len(r.uses) == 0 {
			rp.errf(rp.fields["when"].Line, "%s: when reads no metric", rp.what)
		}
	}
	if r.clearWhen != nil {
		r.ClearWhen = r.clearWhen.src
		for _, u := range r.clearWhen.uses {
			if !slices.Contains(r.uses, u) {
				r.uses = append(r.uses, u)
			}
		}
	}
	if r.Metric == "" && len(r.uses) > 0 && r.when != nil {
		r.Metric = r.when.uses[0]
	}
}

func (rp *ruleParser) rate() {
	r, f := rp.r, rp.fields
	rp.metric()
	rp.phase()
	rp.sustained("samples")
	if n := f["above"]; n != nil {
		if v, ok := rp.number(n, rp.what+": above"); ok {
			r.Above = &v
		}
	}
	if n := f["below"]; n != nil {
		if v, ok := rp.number(n, rp.what+": below"); ok {
			r.Below = &v
		}
	}
	switch {
	case f["above"] == nil && f["below"] == nil:
		rp.errf(r.Line, "%s: a rate rule needs above, below or both (change per minute)", rp.what)
	case r.Above != nil && r.Below != nil && *r.Below >= *r.Above:
		rp.errf(f["below"].Line, "%s: below (%g) must be less than above (%g)", rp.what, *r.Below, *r.Above)
	}
	r.MaxGap = DefaultMaxGap
	if n := f["max_gap"]; n != nil {
		r.MaxGap, _ = rp.duration(n, rp.what+": max_gap", time.Second, 24*time.Hour)
	}
}

func (rp *ruleParser) missing() {
	rp.metric()
	if n := rp.fields["after"]; n != nil {
		rp.r.After, _ = rp.duration(n, rp.what+": after", time.Minute, MaxDuration)
	}
}

func (rp *ruleParser) fleet() {
	r, f := rp.r, rp.fields
	rp.metric()
	rp.phase()
	rp.sustained("cycles")
	r.Window, r.MinDevices, r.Z, r.Direction = DefaultWindow, DefaultMinDevices, DefaultZ, DirectionBoth
	if n := f["window"]; n != nil {
		r.Window, _ = rp.duration(n, rp.what+": window", time.Minute, MaxDuration)
	}
	if n := f["min_devices"]; n != nil {
		if v, ok := rp.integer(n, rp.what+": min_devices"); ok {
			if v < 3 || v > 100000 {
				rp.errf(n.Line, "%s: min_devices %d is out of range (3 to 100000)", rp.what, v)
			}
			r.MinDevices = v
		}
	}
	if n := f["z"]; n != nil {
		if v, ok := rp.number(n, rp.what+": z"); ok {
			if v < 1 || v > 100 {
				rp.errf(n.Line, "%s: z %g is out of range (1 to 100)", rp.what, v)
			}
			r.Z = v
		}
	}
	r.ClearZ = r.Z / 2
	if n := f["clear_z"]; n != nil {
		if v, ok := rp.number(n, rp.what+": clear_z"); ok {
			if v < 0 || v >= r.Z {
				rp.errf(n.Line, "%s: clear_z %g is out of range (0 to less than z, %g)", rp.what, v, r.Z)
			}
			r.ClearZ = v
		}
	}
	if n := f["min_spread"]; n != nil {
		if v, ok := rp.number(n, rp.what+": min_spread"); ok {
			if v < 0 {
				rp.errf(n.Line, "%s: min_spread %g must not be negative", rp.what, v)
			}
			r.MinSpread = v
		}
	}
	if n := f["direction"]; n != nil {
		if s, ok := rp.str(n, rp.what+": direction"); ok {
			switch Direction(s) {
			case DirectionBoth, DirectionAbove, DirectionBelow:
				r.Direction = Direction(s)
			default:
				rp.errf(n.Line, "%s: direction %q must be both, above or below", rp.what, s)
			}
		}
	}
}
