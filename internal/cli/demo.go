package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/internal/demo"
)

func newDemoCmd(env *Env) *ffcli.Command {
	fs := flag.NewFlagSet("moat demo", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	addr := fs.String("addr", "127.0.0.1:8443", "management listener of the demo's server (a free port is taken when it is in use)")
	deviceAddr := fs.String("device-addr", "127.0.0.1:8444", "device listener of the demo's server, where its agents connect (a free port is taken when it is in use)")
	dataDir := fs.String("data", "", "data directory (default: a new temporary directory, removed at exit)")
	exitAfter := fs.Duration("exit-after", 0, "stop this long after the scenario has played (for scripts); 0 runs until Ctrl-C")
	logLevel := fs.String("log-level", "warn", "server log level: debug, info, warn or error")
	return &ffcli.Command{
		Name:       "demo",
		ShortUsage: "moat demo [flags]",
		ShortHelp:  "Run the seed scenario on embedded defaults: a server, tenant Contoso and product DW100.",
		LongHelp: `Starts a security service on SQLite in a temporary directory, bootstraps a platform
operator, creates tenant Contoso with its own Administrator, and creates product DW100 with
its five default device groups (Development, Field Test, Production, Field Test OS
Evaluation, Production OS Evaluation), all through the public management API. Contoso then
makes its offline image signing key, registers only the public half, and packs the DW100
application image; the platform operator makes its offline root and OS keys, publishes the
root and delegates Contoso's apps to Contoso's key; Contoso uploads the package and signs
its apps.json offline, so any TUF client pinned to the printed root can verify the app. A
fleet of in-process agents then attests over the device listener, installs the OS and the
app, rolls back a crashing update, and one device with a tampered app is refused. It prints what it did, the server's two URLs
(management API, device API), the tokens and a ready 'moat login' line and the addresses of
Contoso's cloud, owners' portal and support view.
Then the owners' story plays below it, in about a minute: two owners have claimed their
dishwashers in the portal; one heater fails and the cloud spots it against the fleet, runs
the self-test remotely, mails the owner and reserves the part at her repair shop; the other
owner is prompted to buy rinse agent. Then the rollout story, in about a minute: 16 more
DW100s join DW100/Production (20 simulated DW100s with real agents in all), and app 1.2.0
rolls out across the group in stages (20%, 50%, 100%, a 10 s soak each), the demo
printing each stage's devices as it opens; then a 3.0.0 that crashes after it reports
healthy is stopped by the health gate in its first stage (after a 20 s soak), and the
service rolls the group back to 1.2.0 itself; the demo prints the gate's figures, the
figure that tripped it and the console page of the group. The demo stays up until Ctrl-C; --exit-after stops it that
long after the scenario, whether or not the stories have finished. Nothing needs to be
installed. Where --addr or --device-addr is in use (another demo or server), the demo takes
a free port for it and says so.

EXAMPLES
  moat demo
  moat demo --exit-after 10s
  moat demo --addr 127.0.0.1:9443 --device-addr 127.0.0.1:9444 --data ./demo-data`,
		FlagSet: fs,
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("moat demo takes no arguments, got %q", args[0])
			}
			switch *logLevel {
			case "debug", "info", "warn", "error":
			default:
				return usagef("--log-level must be debug, info, warn or error, got %q", *logLevel)
			}
			dir := *dataDir
			if dir == "" {
				tmp, err := os.MkdirTemp("", "moat-demo-")
				if err != nil {
					return fmt.Errorf("create demo data directory: %w", err)
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			} else if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
				return usagef("--data %s is not empty; the demo needs a fresh directory", dir)
			}
			ctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			log := newLogger(env.Stderr, *logLevel, "text")
			d, err := demo.Start(ctx, demo.Config{Addr: *addr, DeviceAddr: *deviceAddr, DataDir: dir}, log, env.Stdout)
			if err != nil {
				return err
			}
			errExitAfter := errors.New("--exit-after elapsed")
			if *exitAfter > 0 {
				// The time counts from the end of the scenario, however long it took.
				go func() {
					select {
					case <-d.Played():
					case <-ctx.Done():
						return
					}
					t := time.NewTimer(*exitAfter)
					defer t.Stop()
					select {
					case <-t.C:
						cancel(errExitAfter)
					case <-ctx.Done():
					}
				}()
			}
			err = d.Serve(ctx, env.Stdout)
			if errors.Is(context.Cause(ctx), errExitAfter) {
				fmt.Fprintf(env.Stdout, "\nmoat demo: stopped %s after the scenario.\n", *exitAfter)
			} else if err == nil {
				fmt.Fprintln(env.Stdout, "\nmoat demo: stopped.")
			}
			return err
		},
	}
}
