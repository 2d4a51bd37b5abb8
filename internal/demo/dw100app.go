package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/moat-iot/moat/sdk"
)

// appEnv selects the DW100 app built into the moat binary: the demo's app image holds a
// launcher script that runs this binary with MOAT_DEMO_APP=dw100 (a real device's image
// holds the app itself, examples/dw100/app-sdk-demo). The script is what the image signs.
const appEnv = "MOAT_DEMO_APP"

// MaybeRunApp runs the demo's DW100 application and exits when the process was started as
// one (by the agent, through the image's launcher script); otherwise it returns at once.
// The moat binary's main calls it first.
func MaybeRunApp() {
	if os.Getenv(appEnv) != "dw100" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runDW100(ctx)
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "dw100:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runDW100 is a small DW100 app on the public SDK: it reports healthy, then reads its
// sensors every second and publishes them as telemetry.
func runDW100(ctx context.Context) error {
	c, err := sdk.Connect(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	if err := c.ReportHealthy(ctx); err != nil {
		return err
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		water, err1 := c.ADC(0).Read(ctx)
		drying, err2 := c.ADC(1).Read(ctx)
		rinse, err3 := c.ADC(2).Read(ctx)
		if err := errors.Join(err1, err2, err3); err != nil {
			return err
		}
		if err := c.Publish(ctx, "telemetry", map[string]int64{"water_temp_dc": water, "drying_temp_dc": drying, "rinse_agent_pct": rinse}); err != nil {
			return err
		}
	}
}

// appScript is the entry point of the demo's app images: a launcher for the app built into
// exe, or, with crash, an app that fails at start.
func appScript(exe string, crash bool) []byte {
	if crash {
		return []byte("#!/bin/sh\necho 'dw100 2.0.0: heater calibration table missing' >&2\nexit 3\n")
	}
	return []byte("#!/bin/sh\n" + appEnv + "=dw100 exec '" + strings.ReplaceAll(exe, "'", `'\''`) + "'\n")
}
