package cli

import (
	"fmt"
	"io"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// commands lists the top-level commands (the CLI work replaces this file).
func commands(env *Env) []*ffcli.Command {
	return []*ffcli.Command{newServerCmd(env), newDemoCmd(env)}
}

func setUsage(c *ffcli.Command, w io.Writer) {}

func report(w io.Writer, err error) int {
	fmt.Fprintf(w, "moat: %v\n", err)
	return ExitError
}
