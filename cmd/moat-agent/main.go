// Command moat-agent is the device build of moat: the device runtime (`moat-agent agent`)
// and its launcher (`moat-agent boot`) only. It links nothing of the security service, the
// manufacturer cloud or the management CLI (TestSlimBuild_LinksNoServerPackage), so that it
// stays small enough for the boards it runs on; scripts/footprint.sh measures it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/moat-iot/moat/internal/agent/sandbox"
	"github.com/moat-iot/moat/internal/agentcmd"
)

func main() {
	// The app sandbox re-runs this binary as a short init step before the app (it sets up
	// namespaces and drops privileges): that run never returns from here.
	sandbox.MaybeInit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(os.Stderr, "usage:\n  %s\n\n  %s\n", agentcmd.AgentUsage, agentcmd.BootUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "agent":
		err = agentcmd.RunAgent(ctx, args[1:], os.Stderr)
	case "boot":
		self, serr := os.Executable()
		if serr != nil {
			fmt.Fprintln(os.Stderr, "moat-agent:", serr)
			return 1
		}
		err = agentcmd.RunBoot(ctx, args[1:], self, os.Stdout, os.Stderr)
	default:
		fmt.Fprintf(os.Stderr, "moat-agent: unknown command %q (agent or boot)\n", args[0])
		return 2
	}
	switch {
	case agentcmd.IsReboot(err):
		return agentcmd.ExitReboot
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintln(os.Stderr, "moat-agent:", err)
		return 1
	}
	return 0
}
