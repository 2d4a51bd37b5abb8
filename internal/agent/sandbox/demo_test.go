package sandbox_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/agent/sandbox"
	"github.com/moat-iot/moat/internal/image"
)

// TestSandbox_RunsDW100Demo builds examples/dw100/app-sdk-demo (public APIs only) and runs
// it in the strongest mode this runtime has, against the simulated DW100: it reports
// healthy, runs a wash cycle through to drying, answers a diagnostic, and stops cleanly.
func TestSandbox_RunsDW100Demo(t *testing.T) {
	t.Parallel()
	base, _ := appRoot(t)
	dir, err := os.MkdirTemp(base, "dw100")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin", "dw100")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.CommandContext(t.Context(), "go", append(args, "../../../examples/dw100/app-sdk-demo")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	c := cred()
	run, err := os.MkdirTemp(base, "run")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	if err := sandbox.MakeRunDir(run, c); err != nil {
		t.Fatal(err)
	}
	sim := periph.NewDW100()
	var mu sync.Mutex
	phases := map[string]bool{}
	var denied []string
	srv, err := periph.New(periph.Config{
		// examples/dw100/app/app.json
		Capabilities: image.Capabilities{AllowedHosts: []string{"telemetry.contoso.example:8883"}, GPIO: []int{4, 17}, ADC: []int{0, 1, 2}},
		Backend:      sim,
		Denied:       func(c string) { mu.Lock(); denied = append(denied, c); mu.Unlock() },
		Telemetry: func(_ context.Context, topic string, payload json.RawMessage) error {
			var r struct{ Phase string }
			if topic == "telemetry" && json.Unmarshal(payload, &r) == nil {
				mu.Lock()
				phases[r.Phase] = true
				mu.Unlock()
			}
			return nil
		},
		Now: time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(run, "app.sock")
	uid, gid := ownerIDs(c)
	l, err := periph.Listen(sock, uid, gid)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ctx, l) }()
	// The simulation's clock: one simulated second every 5 ms.
	go func() {
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				sim.Step(time.Second)
			}
		}
	}()

	appCtx, stopApp := context.WithCancel(t.Context())
	defer stopApp()
	p, err := sandbox.Start(appCtx, sandbox.Spec{
		Dir: dir, Entry: "bin/dw100", Args: []string{"-tick", "10ms", "-between", "1h"},
		Env:    []string{"GORACE=atexit_sleep_ms=0"},
		Socket: sock, Isolation: sandbox.DefaultIsolation(), Credential: c, StopGrace: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer wcancel()
	if err := srv.WaitHealthy(wctx); err != nil {
		t.Fatalf("WaitHealthy() = %v", err)
	}
	res, err := srv.Diagnose(wctx, "sensors", nil)
	if err != nil {
		t.Fatalf("Diagnose(sensors) = %v", err)
	}
	var r struct {
		Rinse int64 `json:"rinse_agent_percent"`
	}
	if err := json.Unmarshal(res, &r); err != nil || r.Rinse != 100 {
		t.Errorf("Diagnose(sensors) = %s, want rinse_agent_percent 100", res)
	}
	for {
		mu.Lock()
		dry := phases["drying"]
		mu.Unlock()
		if dry {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("the wash cycle never reached drying: phases %v", phases)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopApp()
	exit, err := p.Wait()
	if err != nil || exit.Code != 0 {
		t.Errorf("demo app stopped with %v, %v, want status 0 (it handles SIGTERM); stderr: %s", exit, err, exit.Stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(denied) != 0 {
		t.Errorf("the demo used undeclared capabilities: %v", denied)
	}
	cancel()
	<-served
}
