// Command moat is the one moat binary: security service, demo and management CLI.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/moat-iot/moat/internal/agent/sandbox"
	"github.com/moat-iot/moat/internal/cli"
	"github.com/moat-iot/moat/internal/demo"
)

func main() {
	// The app sandbox re-runs this binary as a short init step before the app (it sets up
	// namespaces and drops privileges): that run never returns from here.
	sandbox.MaybeInit()
	// The demo's DW100 app images run this binary as the app.
	demo.MaybeRunApp()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.StdEnv())
	stop()
	os.Exit(code)
}
