package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/moat-iot/moat/sdk"
)

// A DW100 wash-cycle loop: heat the water to 55 °C, publish what the sensors say, answer
// diagnostics. examples/dw100/app-sdk-demo is the whole application.
func Example() {
	ctx := context.Background()
	c, err := sdk.Connect(ctx) // $MOAT_SOCKET, set by the runtime
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	heater, water := c.GPIO(4), c.ADC(0)
	if _, err := water.Read(ctx); err != nil {
		log.Fatal(err)
	}
	if err := c.ReportHealthy(ctx); err != nil {
		log.Fatal(err)
	}
	go func() {
		_ = c.Diagnostics(ctx, func(name string, _ json.RawMessage) (any, error) {
			if name == "water" {
				return water.Read(ctx)
			}
			return nil, fmt.Errorf("unknown diagnostic %q", name)
		})
	}()
	for {
		t, err := water.Read(ctx)
		if err != nil {
			log.Fatal(err)
		}
		if err := heater.Set(ctx, t < 550); err != nil {
			log.Fatal(err)
		}
		if err := c.Publish(ctx, "dw100/telemetry", map[string]any{"water_deci_c": t}); err != nil {
			log.Print(err)
		}
		time.Sleep(time.Second)
	}
}

// An undeclared peripheral is refused, and the refusal reported to the tenant.
func ExampleErrCapabilityDenied() {
	ctx := context.Background()
	c, err := sdk.Connect(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.GPIO(5).Set(ctx, true); errors.Is(err, sdk.ErrCapabilityDenied) {
		log.Print("gpio 5 is not in the manifest")
	}
}

// HTTPClient reaches the hosts the manifest declares, through the runtime's proxy.
func ExampleHTTPClient() {
	resp, err := sdk.HTTPClient().Get("https://telemetry.contoso.example:8883/health")
	if errors.Is(err, sdk.ErrHostDenied) {
		log.Fatal("not in the manifest's allowed_hosts")
	}
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
}
