package cli

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/internal/agentcmd"
)

// The device runtime in the full binary; cmd/moat-agent is the slim device build of the
// same commands (internal/agentcmd).

func newAgentCmd(env *Env) *ffcli.Command {
	var f agentcmd.Flags
	fs := flag.NewFlagSet("moat agent", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	f.Register(fs)
	return &ffcli.Command{
		Name:       "agent",
		ShortUsage: "moat agent --state DIR --server URL --identity FILE --root FILE --server-ca FILE [flags]",
		ShortHelp:  "Run the device runtime: verified boot, attestation, A/B updates, the sandboxed app.",
		LongHelp:   agentcmd.AgentUsage,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("moat agent takes no arguments, got %q", args[0])
			}
			err := agentcmd.Run(ctx, f, env.Stderr)
			if agentcmd.IsReboot(err) {
				return &cliError{code: agentcmd.ExitReboot, msg: "a new OS is installed: the launcher boots it"}
			}
			return err
		},
	}
}

func newBootCmd(env *Env) *ffcli.Command {
	var b agentcmd.BootFlags
	fs := flag.NewFlagSet("moat boot", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	b.Register(fs)
	return &ffcli.Command{
		Name:       "boot",
		ShortUsage: "moat boot --state DIR --root FILE -- AGENT-FLAGS...",
		ShortHelp:  "The device launcher: verify the OS slot, run its agent, fall back to the other slot.",
		LongHelp:   agentcmd.BootUsage,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if b.State == "" || b.Root == "" {
				return usagef("--state DIR and --root FILE are required")
			}
			err = agentcmd.Boot(ctx, b, args, self, env.Stdout, env.Stderr)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
}
