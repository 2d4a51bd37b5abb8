package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// commands lists the top-level commands, in the order help shows them.
func commands(env *Env) []*ffcli.Command {
	return []*ffcli.Command{
		newLoginCmd(env),
		newLogoutCmd(env),
		newTenantCmd(env),
		newProductCmd(env),
		newDeviceGroupCmd(env),
		newDeviceCmd(env),
		newFleetCmd(env),
		newImageCmd(env),
		newDeploymentCmd(env),
		newErrorReportCmd(env),
		newCACertificateCmd(env),
		newMemberCmd(env),
		newTokenCmd(env),
		newAuditCmd(env),
		newConsoleCmd(env),
		newKeyCmd(env),
		newPlatformCmd(env),
		newServerCmd(env),
		newCloudCmd(env),
		newAgentCmd(env),
		newBootCmd(env),
		newDemoCmd(env),
		newSimCmd(env),
	}
}

// errHelpShown is returned after help was printed for a flag given after a positional
// argument; Main then exits 0 without printing anything more.
var errHelpShown = errors.New("help shown")

// verb describes one `moat <noun> <verb>` command.
type verb struct {
	name  string
	args  string // positional arguments for the usage line, e.g. "ID|NAME"
	short string // one line
	long  string // ends with an EXAMPLES section
	// tenant adds --tenant: the command works inside a tenant.
	tenant bool
	// flags registers the verb's own flags.
	flags func(fs *flag.FlagSet)
	run   func(ctx context.Context, s *session, args []string) error
}

// newVerb builds the ffcli command for v. Every verb takes --output/-o; tenant-scoped ones
// take --tenant. Flags may also follow the positional arguments.
func newVerb(env *Env, noun string, v verb) *ffcli.Command {
	full := "moat " + noun + " " + v.name
	fs := flag.NewFlagSet(full, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	s := &session{env: env, fs: fs}
	if v.flags != nil {
		v.flags(fs)
	}
	if v.tenant {
		fs.StringVar(&s.tenantRef, "tenant", "", "tenant `ID|NAME`; overrides the one chosen with 'moat tenant select'")
	}
	s.output = "table"
	if fs.Lookup("output") == nil { // a verb that writes a file may name it --output ('error-report download')
		fs.StringVar(&s.output, "output", "table", "output format: table or json (json prints the API objects unchanged)")
		fs.StringVar(&s.output, "o", "table", "shorthand for --output")
	}
	usage := full + " [flags]"
	if v.args != "" {
		usage += " " + v.args
	}
	return &ffcli.Command{
		Name:       v.name,
		ShortUsage: usage,
		ShortHelp:  v.short,
		LongHelp:   v.long,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			args, err := parseInterleaved(fs, args)
			if err != nil {
				return err
			}
			if s.output != "table" && s.output != "json" {
				return usagef("--output must be table or json, got %q", s.output)
			}
			return v.run(ctx, s, args)
		},
	}
}

// newNoun builds a command that only groups verbs.
func newNoun(env *Env, name, short, long string, verbs ...*ffcli.Command) *ffcli.Command {
	fs := flag.NewFlagSet("moat "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return &ffcli.Command{
		Name:        name,
		ShortUsage:  "moat " + name + " <command> [flags]",
		ShortHelp:   short,
		LongHelp:    long,
		FlagSet:     fs,
		Subcommands: verbs,
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for 'moat %s'; see 'moat %s --help'", args[0], name, name)
			}
			return flag.ErrHelp
		},
	}
}

// parseInterleaved parses flags that follow positional arguments ("show DW100 -o json"),
// which the flag package alone would take as arguments, and returns the positional ones.
// A "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		a := args[0]
		if a == "--" {
			return append(pos, args[1:]...), nil
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			args = args[1:]
			continue
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelpShown
			}
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		args = rest
	}
	return pos, nil
}

// wantArgs checks the number of positional arguments.
func wantArgs(args []string, n int, what string) error {
	switch {
	case len(args) < n:
		return usagef("missing %s", what)
	case len(args) > n:
		return usagef("unexpected argument %q", args[n])
	}
	return nil
}

// setUsage makes every command of the tree print its help the same way, to w.
func setUsage(root *ffcli.Command, w io.Writer) {
	walk(root, func(c *ffcli.Command, _ []string) {
		c.UsageFunc = usageText
		if c.FlagSet != nil {
			c.FlagSet.SetOutput(w)
		}
	})
}

// walk visits c and its subcommands depth first, with the names leading to each.
func walk(c *ffcli.Command, fn func(c *ffcli.Command, path []string)) {
	var rec func(c *ffcli.Command, path []string)
	rec = func(c *ffcli.Command, path []string) {
		path = append(path[:len(path):len(path)], c.Name)
		fn(c, path)
		for _, sub := range c.Subcommands {
			rec(sub, path)
		}
	}
	rec(c, nil)
}

// splitHelp splits a long help into its description and the lines of its EXAMPLES section
// (without their indentation).
func splitHelp(long string) (desc string, examples []string) {
	desc = long
	if i := strings.Index(long, "EXAMPLES\n"); i == 0 || (i > 0 && long[i-1] == '\n') {
		desc = long[:i]
		for _, l := range strings.Split(long[i+len("EXAMPLES\n"):], "\n") {
			examples = append(examples, strings.TrimPrefix(l, "  "))
		}
	}
	for len(examples) > 0 && strings.TrimSpace(examples[len(examples)-1]) == "" {
		examples = examples[:len(examples)-1]
	}
	return strings.TrimSpace(desc), examples
}

// flagDoc is one flag as help and docs/cli.md show it.
type flagDoc struct {
	names   string // "--output, -o"
	arg     string // "NAME", empty for booleans
	def     string // default, empty when zero
	usage   string
	boolean bool
}

// flagDocs lists a flag set's flags, folding each "shorthand for --x" flag into --x.
func flagDocs(fs *flag.FlagSet) []flagDoc {
	if fs == nil {
		return nil
	}
	short := map[string][]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if long, ok := strings.CutPrefix(f.Usage, "shorthand for --"); ok {
			short[long] = append(short[long], f.Name)
		}
	})
	var out []flagDoc
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Usage, "shorthand for --") {
			return
		}
		d := flagDoc{names: dashes(f.Name)}
		for _, s := range short[f.Name] {
			d.names += ", " + dashes(s)
		}
		arg, usage := flag.UnquoteUsage(f)
		d.arg, d.usage = strings.ToUpper(arg), usage
		if arg == "value" || arg == "string" {
			d.arg = strings.ToUpper(f.Name)
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			d.arg, d.boolean = "", true
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			d.def = f.DefValue
		}
		out = append(out, d)
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].names < out[j].names })
	return out
}

func dashes(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// usageText renders a command's help: summary, usage line, description, subcommands,
// flags, then examples.
func usageText(c *ffcli.Command) string {
	var b strings.Builder
	desc, examples := splitHelp(c.LongHelp)
	if c.ShortHelp != "" {
		fmt.Fprintf(&b, "%s\n\n", c.ShortHelp)
	}
	usage := c.ShortUsage
	if usage == "" {
		usage = c.Name
	}
	fmt.Fprintf(&b, "USAGE\n  %s\n\n", usage)
	if desc != "" {
		fmt.Fprintf(&b, "%s\n\n", desc)
	}
	if len(c.Subcommands) > 0 {
		b.WriteString("COMMANDS\n")
		tw := tabwriter.NewWriter(&b, 0, 2, 2, ' ', 0)
		for _, sub := range c.Subcommands {
			fmt.Fprintf(tw, "  %s\t%s\n", sub.Name, sub.ShortHelp)
		}
		tw.Flush()
		b.WriteString("\n")
	}
	if fds := flagDocs(c.FlagSet); len(fds) > 0 {
		b.WriteString("FLAGS\n")
		tw := tabwriter.NewWriter(&b, 0, 2, 2, ' ', 0)
		for _, d := range fds {
			name := d.names
			if d.arg != "" {
				name += " " + d.arg
			}
			usage := d.usage
			if d.def != "" {
				usage += fmt.Sprintf(" (default %q)", d.def)
			}
			fmt.Fprintf(tw, "  %s\t%s\n", name, usage)
		}
		tw.Flush()
		b.WriteString("\n")
	}
	if len(examples) > 0 {
		b.WriteString("EXAMPLES\n")
		for _, l := range examples {
			if l == "" {
				b.WriteString("\n")
				continue
			}
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}
