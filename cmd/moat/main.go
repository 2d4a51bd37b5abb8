// Command moat is the one moat binary: security service, demo and management CLI.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/moat-iot/moat/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.StdEnv())
	stop()
	os.Exit(code)
}
