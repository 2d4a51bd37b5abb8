package demo

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/sdk"
)

// TestHeaterSelfTest_DetectsAFailingHeater: the demo app's heater-self-test, run through
// the real local API on a simulated DW100 that warms in real time, passes a working heater
// and finds a dead one failing (the cloud's diagnostic for the failing-heater alert).
func TestHeaterSelfTest_DetectsAFailingHeater(t *testing.T) {
	t.Parallel()
	for name, fault := range map[string]periph.HeaterFault{"ok": periph.HeaterWorking, "heater_failing": periph.HeaterDead} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sim := periph.NewDW100()
			sim.RealTime(time.Now)
			sim.SetHeaterFault(fault)
			c := dw100Runtime(t, sim)
			got, err := heaterSelfTest(t.Context(), c, 2*time.Second)
			if err != nil {
				t.Fatalf("heaterSelfTest() = %v", err)
			}
			if got["verdict"] != name || got["ok"] != (name == "ok") {
				t.Errorf("heaterSelfTest() = %v, want verdict %s", got, name)
			}
			if sim.HeaterOn() {
				t.Error("the heater is still on after the self-test")
			}
		})
	}
}

func dw100Runtime(t *testing.T, sim *periph.DW100) *sdk.Client {
	t.Helper()
	srv, err := periph.New(periph.Config{
		Capabilities: image.Capabilities{GPIO: []int{periph.DW100Heater, periph.DW100Door},
			ADC: []int{periph.DW100WaterTemp, periph.DW100DryingTemp, periph.DW100RinseAgent}},
		Backend: sim, Denied: func(string) {}, Now: time.Now,
		Telemetry: func(context.Context, string, json.RawMessage) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "dw100")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "app.sock")
	l, err := periph.Listen(sock, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	c, err := sdk.ConnectSocket(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
