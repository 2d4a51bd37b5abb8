package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/builtin"
	"go.yaml.in/yaml/v3"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Problem is one thing wrong with a rule file, at a line.
type Problem struct {
	File    string
	Line    int
	Message string
}

func (p Problem) String() string { return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Message) }

// ParseError lists every problem Parse found, in line order.
type ParseError struct {
	Problems []Problem
}

func (e *ParseError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

var (
	ruleNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,63}$`)
	productRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	unitRE     = regexp.MustCompile(`^[A-Za-z0-9%./_\[\]-]{1,16}$`)
)

// reserved are names a metric may not take: the condition environment's other names and
// expr's keywords and builtins (a metric named "abs" would shadow a function).
var reserved = func() map[string]bool {
	r := map[string]bool{
		"phase": true, "cycle": true, "true": true, "false": true, "nil": true, "and": true,
		"or": true, "not": true, "in": true, "matches": true, "contains": true,
		"startswith": true, "endswith": true, "let": true, "if": true, "else": true,
	}
	for _, n := range builtin.Names {
		r[strings.ToLower(n)] = true
	}
	return r
}()

// Parse reads and validates a rule file. The error is a *ParseError that lists every
// problem as "file:line: message"; actions lists the action names the caller accepts.
// Parse bounds what it reads (MaxFileBytes, MaxRules, MaxMetrics, MaxExprBytes) and
// refuses YAML anchors, aliases, merge keys, custom tags and more than one document.
// Attacked by TestParse_Errors and FuzzParse.
func Parse(data []byte, filename string, actions Actions) (*File, error) {
	p := &parser{name: filename, actions: actions}
	f := p.parse(data)
	if len(p.problems) > 0 {
		slices.SortStableFunc(p.problems, func(a, b Problem) int { return a.Line - b.Line })
		return nil, &ParseError{Problems: p.problems}
	}
	return f, nil
}

type parser struct {
	name     string
	actions  Actions
	problems []Problem
	// refs are the actions whose arguments name the file's declarations, for the second
	// pass (checkDeclared).
	refs []actionRef
}

func (p *parser) errf(line int, format string, args ...any) {
	p.problems = append(p.problems, Problem{File: p.name, Line: line, Message: fmt.Sprintf(format, args...)})
}

func (p *parser) parse(data []byte) *File {
	if len(data) > MaxFileBytes {
		p.errf(1, "file is %d bytes, more than %d", len(data), MaxFileBytes)
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errf(1, "file is empty")
		} else {
			p.errf(yamlLine(err), "%s", yamlMessage(err))
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		p.errf(extra.Line, "file holds more than one YAML document")
		return nil
	}
	if !p.plain(&doc) {
		return nil
	}
	root := doc.Content[0]
	f := &File{Name: p.name}
	fields := p.mapping(root, "the file", map[string]bool{
		"version": true, "product": true, "description": true, "metrics": true, "rules": true,
		"warranty": true, "consumables": true, "parts": true,
	}, []string{"version", "product", "metrics", "rules"})
	if fields == nil {
		return nil
	}
	if n := fields["version"]; n != nil {
		if v, ok := p.integer(n, "version"); ok && v != Version {
			p.errf(n.Line, "version %d is not supported (this moat reads version %d)", v, Version)
		} else if ok {
			f.Version = v
		}
	}
	if n := fields["product"]; n != nil {
		if s, ok := p.str(n, "product"); ok {
			if !productRE.MatchString(s) {
				p.errf(n.Line, "product %q must be 1 to 64 letters, digits, '_', '.' or '-'", s)
			}
			f.Product = s
		}
	}
	if n := fields["description"]; n != nil {
		p.text(n, "description")
	}
	if n := fields["metrics"]; n != nil {
		f.Metrics = p.metrics(n)
	}
	p.settings(fields, f)
	if n := fields["rules"]; n != nil {
		f.Rules = p.rules(n, f.Metrics)
	}
	p.checkDeclared(f)
	return f
}

// plain refuses anchors, aliases and tags other than YAML's core ones anywhere in the
// tree, so what the file says is what it reads (no alias expansion, no merge keys).
func (p *parser) plain(n *yaml.Node) bool {
	ok := true
	var walk func(n *yaml.Node, depth int)
	walk = func(n *yaml.Node, depth int) {
		switch {
		case depth > 16:
			p.errf(n.Line, "nested more than 16 deep")
			ok = false
			return
		case n.Kind == yaml.AliasNode || n.Anchor != "":
			p.errf(n.Line, "YAML anchors and aliases are not allowed")
			ok = false
			return
		case n.Tag == "!!merge":
			p.errf(n.Line, "YAML merge keys are not allowed")
			ok = false
			return
		}
		switch n.Tag {
		case "", "!!str", "!!int", "!!float", "!!bool", "!!null", "!!map", "!!seq":
		default:
			p.errf(n.Line, "YAML tag %s is not allowed", n.Tag)
			ok = false
			return
		}
		for _, c := range n.Content {
			walk(c, depth+1)
		}
	}
	walk(n, 0)
	if ok && (len(n.Content) != 1) {
		p.errf(n.Line, "file must hold one YAML mapping")
		return false
	}
	return ok
}

// mapping checks n is a mapping whose keys are known and unique and that holds the
// required ones; it returns the values by key (nil after a problem with n itself).
func (p *parser) mapping(n *yaml.Node, what string, known map[string]bool, required []string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, "%s must be a mapping", what)
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errf(k.Line, "%s: keys must be plain words", what)
		case !known[k.Value]:
			p.errf(k.Line, "%s: unknown field %q (known: %s)", what, k.Value, strings.Join(sortedKeys(known), ", "))
		case out[k.Value] != nil:
			p.errf(k.Line, "%s: duplicate field %q", what, k.Value)
		default:
			out[k.Value] = v
		}
	}
	for _, r := range required {
		if out[r] == nil {
			p.errf(n.Line, "%s: missing field %q", what, r)
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (p *parser) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errf(n.Line, "%s must be a string", what)
		return "", false
	}
	return n.Value, true
}

func (p *parser) text(n *yaml.Node, what string) (string, bool) {
	s, ok := p.str(n, what)
	if ok && len(s) > 1024 {
		p.errf(n.Line, "%s is %d bytes, more than 1024", what, len(s))
		return "", false
	}
	return s, ok
}

func (p *parser) integer(n *yaml.Node, what string) (int, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		p.errf(n.Line, "%s must be a whole number", what)
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 10, 32)
	if err != nil {
		p.errf(n.Line, "%s must be a whole number from %d to %d", what, math.MinInt32, math.MaxInt32)
		return 0, false
	}
	return int(v), true
}

func (p *parser) number(n *yaml.Node, what string) (float64, bool) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
		p.errf(n.Line, "%s must be a number", what)
		return 0, false
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 1e12 {
		p.errf(n.Line, "%s must be a finite number of at most 1e12", what)
		return 0, false
	}
	return v, true
}

func (p *parser) duration(n *yaml.Node, what string, lo, hi time.Duration) (time.Duration, bool) {
	s, ok := p.str(n, what)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.errf(n.Line, "%s %q must be a duration such as 30m or 24h", what, s)
		return 0, false
	}
	if d < lo || d > hi {
		p.errf(n.Line, "%s %s is out of range (%s to %s)", what, d, lo, hi)
		return 0, false
	}
	return d, true
}

func (p *parser) metrics(n *yaml.Node) []Metric {
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, "metrics must be a mapping of metric name to {unit, label}")
		return nil
	}
	if len(n.Content)/2 > MaxMetrics {
		p.errf(n.Line, "metrics declares %d metrics, more than %d", len(n.Content)/2, MaxMetrics)
		return nil
	}
	if len(n.Content) == 0 {
		p.errf(n.Line, "metrics must declare at least one metric")
	}
	var out []Metric
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		switch {
		case k.Kind != yaml.ScalarNode || !telemetry.ValidName(name):
			p.errf(k.Line, "metric name %q must be a lower-case letter, then up to 63 lower-case letters, digits or '_'", name)
			continue
		case reserved[name]:
			p.errf(k.Line, "metric name %q is reserved", name)
			continue
		case seen[name]:
			p.errf(k.Line, "duplicate metric %q", name)
			continue
		}
		seen[name] = true
		what := fmt.Sprintf("metric %s", name)
		fields := p.mapping(v, what, map[string]bool{"unit": true, "label": true}, []string{"unit"})
		if fields == nil {
			continue
		}
		m := Metric{Name: name, Line: k.Line, Label: strings.ReplaceAll(name, "_", " ")}
		if u := fields["unit"]; u != nil {
			if s, ok := p.str(u, what+": unit"); ok {
				if !unitRE.MatchString(s) {
					p.errf(u.Line, "%s: unit %q must be 1 to 16 letters, digits or %%./_[]- (UCUM: Cel, %%, L)", what, s)
				}
				m.Unit = s
			}
		}
		if l := fields["label"]; l != nil {
			if s, ok := p.text(l, what+": label"); ok && s != "" {
				m.Label = s
			}
		}
		out = append(out, m)
	}
	return out
}

func (p *parser) rules(n *yaml.Node, metrics []Metric) []*Rule {
	if n.Kind != yaml.SequenceNode {
		p.errf(n.Line, "rules must be a list")
		return nil
	}
	if len(n.Content) > MaxRules {
		p.errf(n.Line, "file holds %d rules, more than %d", len(n.Content), MaxRules)
		return nil
	}
	if len(n.Content) == 0 {
		p.errf(n.Line, "rules must hold at least one rule")
	}
	var out []*Rule
	names := map[string]int{}
	for _, rn := range n.Content {
		r := p.rule(rn, metrics)
		if r == nil {
			continue
		}
		if first, dup := names[r.Name]; dup && r.Name != "" {
			p.errf(r.Line, "duplicate rule name %q (first at line %d)", r.Name, first)
		}
		names[r.Name] = r.Line
		out = append(out, r)
	}
	return out
}

var yamlLineRE = regexp.MustCompile(`line ([0-9]+)`)

// yamlLine finds the line in a YAML syntax error (1 when it names none).
func yamlLine(err error) int {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		if n, e := strconv.Atoi(m[1]); e == nil {
			return n
		}
	}
	return 1
}

var yamlPrefixRE = regexp.MustCompile(`^yaml: (line [0-9]+: )?`)

func yamlMessage(err error) string {
	return "invalid YAML: " + yamlPrefixRE.ReplaceAllString(err.Error(), "")
}
