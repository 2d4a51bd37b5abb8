package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// writeDocs renders the command reference, docs/cli.md, from the command tree: the same
// summaries, usage lines, descriptions, flags and examples that --help prints, plus the
// exit codes. TestDocs keeps the file in step with the code.
func writeDocs(w io.Writer, root *ffcli.Command) error {
	var b strings.Builder
	b.WriteString("# moat command reference\n\n")
	b.WriteString("<!-- Generated from the command tree by `go test ./internal/cli -run TestDocs -update`; do not edit. -->\n\n")
	b.WriteString("Every command prints this help with `--help`. Management commands talk to a server through\n")
	b.WriteString("its API after `moat login`; those that work inside a tenant use the one chosen with\n")
	b.WriteString("`moat tenant select`, or `--tenant`. Results go to standard output (a table, or with\n")
	b.WriteString("`--output json` the API objects unchanged), diagnostics to standard error. Flags may\n")
	b.WriteString("come before or after the arguments.\n\n")

	b.WriteString("## Exit codes\n\n| code | meaning |\n|---:|---|\n")
	for _, e := range exitCodes {
		fmt.Fprintf(&b, "| %d | %s |\n", e.Code, cell(e.Meaning))
	}

	b.WriteString("\n## Commands\n\n")
	walk(root, func(c *ffcli.Command, path []string) {
		name := strings.Join(path, " ")
		indent := strings.Repeat("  ", len(path)-1)
		fmt.Fprintf(&b, "%s- [`%s`](#%s): %s\n", indent, name, anchor(name), c.ShortHelp)
	})

	walk(root, func(c *ffcli.Command, path []string) {
		name := strings.Join(path, " ")
		desc, examples := splitHelp(c.LongHelp)
		fmt.Fprintf(&b, "\n## %s\n\n", name)
		if c.ShortHelp != "" {
			fmt.Fprintf(&b, "%s\n\n", c.ShortHelp)
		}
		usage := c.ShortUsage
		if usage == "" {
			usage = name
		}
		fmt.Fprintf(&b, "```\n%s\n```\n\n", usage)
		if desc != "" {
			fmt.Fprintf(&b, "%s\n\n", desc)
		}
		if len(c.Subcommands) > 0 {
			b.WriteString("| command | summary |\n|---|---|\n")
			for _, sub := range c.Subcommands {
				sn := name + " " + sub.Name
				fmt.Fprintf(&b, "| [`%s`](#%s) | %s |\n", sn, anchor(sn), cell(sub.ShortHelp))
			}
			b.WriteString("\n")
		}
		if fds := flagDocs(c.FlagSet); len(fds) > 0 {
			b.WriteString("| flag | default | description |\n|---|---|---|\n")
			for _, d := range fds {
				f := d.names
				if d.arg != "" {
					f += " " + d.arg
				}
				def := ""
				if d.def != "" {
					def = "`" + d.def + "`"
				}
				fmt.Fprintf(&b, "| `%s` | %s | %s |\n", cell(f), def, cell(d.usage))
			}
			b.WriteString("\n")
		}
		if len(examples) > 0 {
			fmt.Fprintf(&b, "Examples:\n\n```sh\n%s\n```\n", strings.Join(examples, "\n"))
		}
	})
	_, err := io.WriteString(w, strings.TrimRight(b.String(), "\n")+"\n")
	return err
}

// anchor is GitHub's heading anchor for a heading of plain words.
func anchor(heading string) string {
	return strings.NewReplacer(" ", "-").Replace(strings.ToLower(heading))
}

// cell escapes text for a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
