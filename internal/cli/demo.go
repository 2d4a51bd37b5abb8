package cli

import (
	"context"
	"flag"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// newDemoCmd is filled in by the demo work; placeholder so the tree compiles.
func newDemoCmd(env *Env) *ffcli.Command {
	fs := flag.NewFlagSet("moat demo", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return &ffcli.Command{Name: "demo", ShortUsage: "moat demo [flags]", ShortHelp: "Run the seed scenario on embedded defaults.", FlagSet: fs,
		Exec: func(ctx context.Context, args []string) error { return nil }}
}
