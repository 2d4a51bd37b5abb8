// Package cli is moat's command tree: `moat <noun> <verb>` over the management API (through
// the public client package only), plus the `server` and `demo` subcommands that start the
// composition roots. All input and output goes through Env, so tests run commands
// in-process; nothing here reads globals.
//
// Exit codes: 0 ok, 1 error, 2 usage, and for API problems the code of the problem's kind
// (see docs/cli.md).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// Env is the world a command sees.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// ConfigDir holds the CLI's login state (config.json, mode 0600).
	ConfigDir string
}

// StdEnv is the process's real environment.
func StdEnv() Env {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	if d := os.Getenv("MOAT_CONFIG_DIR"); d != "" {
		dir = d
	} else {
		dir = filepath.Join(dir, "moat")
	}
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, ConfigDir: dir}
}

// Exit codes besides those of problem kinds.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// usageError marks an error as the user's misuse of the command line (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// Main runs the command line args and returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	root := Root(&env)
	if err := root.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(env.Stderr, "moat: %v\n", err)
		return ExitUsage
	}
	if err := root.Run(ctx); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitUsage
		}
		return report(env.Stderr, err)
	}
	return ExitOK
}

// Root builds the command tree.
func Root(env *Env) *ffcli.Command {
	fs := flag.NewFlagSet("moat", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	root := &ffcli.Command{
		Name:       "moat",
		ShortUsage: "moat <command> [flags]",
		ShortHelp:  "Secure connected devices: security service, device runtime, manufacturer cloud and tools in one binary.",
		LongHelp: `moat proves each device runs genuine, approved software, issues it a short-lived
certificate, and delivers signed updates to exactly the devices they are meant for.

One binary: 'moat server' runs the security service, 'moat demo' runs the whole seed
scenario on embedded defaults, and the other commands manage a server over its API
(log in first with 'moat login').

EXAMPLES
  moat demo
  moat server --data ./moat-data
  moat login --server https://127.0.0.1:8443 --ca-cert ./moat-data/tls/ca.pem --token -
  moat product create --name DW100 --description "Contoso dishwasher"`,
		FlagSet:     fs,
		Subcommands: commands(env),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q; see 'moat --help'", args[0])
			}
			return flag.ErrHelp
		},
	}
	setUsage(root, env.Stderr)
	return root
}
