package rules

import (
	"errors"
	"fmt"
	"slices"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	exprparser "github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// allowedBuiltins are the only functions a condition may call: pure, numeric, constant
// time. Every other expr builtin is disabled; among them are those that loop or allocate
// with their input (map, filter, reduce, repeat, split, sort, ...), read the clock (now,
// date) or parse (fromJSON).
var allowedBuiltins = []string{"abs", "ceil", "floor", "round", "min", "max"}

// allowedBinary are the binary operators a condition may use. Left out: ".." (builds an
// array as long as its operands say), "matches" (compiles a regular expression at run
// time), "??" and "|" (nothing in a sample is nil or a function).
var allowedBinary = map[string]bool{
	"+": true, "-": true, "*": true, "/": true, "%": true, "**": true, "^": true,
	"==": true, "!=": true, "<": true, ">": true, "<=": true, ">=": true,
	"and": true, "&&": true, "or": true, "||": true, "in": true, "not in": true,
	"contains": true, "startsWith": true, "endsWith": true,
}

// condition is a compiled expression: a boolean over one sample's readings (float64, by
// metric name) and its phase and cycle (strings).
type condition struct {
	src     string
	program *vm.Program
	// uses are the metrics it reads.
	uses []string
}

// compileCondition type-checks src against the file's metrics. The returned error is one
// line, without the file position (the caller adds the YAML line).
//
// What a condition may hold is an allow list walked over the syntax tree before compiling:
// literals, the declared metrics, phase and cycle, arithmetic, comparison and boolean
// operators, "in" over a literal array, the string tests contains, startsWith and
// endsWith, the ternary and the builtins in allowedBuiltins. Nothing loops, nothing
// calls out, nothing allocates more than the expression's own size, so one evaluation is
// bounded by MaxExprNodes steps. Attacked by TestParse_RefusesUnboundedExpressions.
func compileCondition(src string, metrics []Metric) (*condition, error) {
	if len(src) > MaxExprBytes {
		return nil, fmt.Errorf("expression is %d bytes, more than %d", len(src), MaxExprBytes)
	}
	tree, err := exprparser.Parse(src)
	if err != nil {
		return nil, exprError(err)
	}
	w := &walker{metrics: metrics}
	ast.Walk(&tree.Node, w)
	if w.nodes > MaxExprNodes {
		return nil, fmt.Errorf("expression has %d nodes, more than %d", w.nodes, MaxExprNodes)
	}
	if len(w.problems) > 0 {
		return nil, errors.New(w.problems[0])
	}
	env := envFor(metrics)
	opts := []expr.Option{
		expr.Env(env), expr.AsBool(), expr.DisableAllBuiltins(), expr.MaxNodes(MaxExprNodes),
	}
	for _, b := range allowedBuiltins {
		opts = append(opts, expr.EnableBuiltin(b))
	}
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, exprError(err)
	}
	slices.Sort(w.uses)
	return &condition{src: src, program: prog, uses: slices.Compact(w.uses)}, nil
}

// envFor is the typed environment conditions are checked against: each metric a float64,
// phase and cycle strings.
func envFor(metrics []Metric) map[string]any {
	env := make(map[string]any, len(metrics)+2)
	for _, m := range metrics {
		env[m.Name] = float64(0)
	}
	env["phase"] = ""
	env["cycle"] = ""
	return env
}

// exprError shortens expr's multi-line error (message, snippet, caret) to one line.
func exprError(err error) error {
	if fe, ok := errors.AsType[*file.Error](err); ok {
		return fmt.Errorf("%s (at column %d)", fe.Message, fe.Column+1)
	}
	return err
}

type walker struct {
	metrics  []Metric
	nodes    int
	uses     []string
	problems []string
}

func (w *walker) refuse(format string, args ...any) {
	w.problems = append(w.problems, fmt.Sprintf(format, args...))
}

func (w *walker) Visit(node *ast.Node) {
	w.nodes++
	switch n := (*node).(type) {
	case *ast.NilNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.StringNode,
		*ast.ConditionalNode, *ast.ArrayNode:
	case *ast.IdentifierNode:
		for _, m := range w.metrics {
			if m.Name == n.Value {
				w.uses = append(w.uses, n.Value)
			}
		}
	case *ast.UnaryNode:
	case *ast.BinaryNode:
		if !allowedBinary[n.Operator] {
			w.refuse("operator %q is not allowed in a rule condition", n.Operator)
		}
	case *ast.BuiltinNode:
		if !slices.Contains(allowedBuiltins, n.Name) {
			w.refuse("function %s is not allowed in a rule condition (allowed: %v)", n.Name, allowedBuiltins)
		}
	case *ast.CallNode:
		w.refuse("function calls other than %v are not allowed in a rule condition", allowedBuiltins)
	default:
		w.refuse("%s is not allowed in a rule condition", describe(n))
	}
}

func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.MemberNode, *ast.ChainNode:
		return "member access"
	case *ast.SliceNode:
		return "slicing"
	case *ast.MapNode, *ast.PairNode:
		return "a map literal"
	case *ast.VariableDeclaratorNode:
		return "let"
	case *ast.SequenceNode:
		return "a sequence (;)"
	case *ast.PredicateNode, *ast.PointerNode:
		return "a predicate"
	case *ast.BytesNode:
		return "a bytes literal"
	}
	return fmt.Sprintf("%T", n)
}

// evaluator runs conditions with a reused VM and environment; it is not safe for
// concurrent use (the engine holds its lock).
type evaluator struct {
	vm  vm.VM
	env map[string]any
}

// eval reports the condition over the sample; ok is false when the sample lacks a metric
// the condition reads, or the evaluation erred.
func (e *evaluator) eval(c *condition, s *Sample) (result, ok bool, err error) {
	clear(e.env)
	for _, m := range c.uses {
		v, has := s.Readings[m]
		if !has {
			return false, false, nil
		}
		e.env[m] = v
	}
	e.env["phase"] = s.Phase
	e.env["cycle"] = s.Cycle
	out, err := e.vm.Run(c.program, e.env)
	if err != nil {
		return false, false, err
	}
	b, isBool := out.(bool)
	return b, isBool, nil
}
