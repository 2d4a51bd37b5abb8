package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/agent/errqueue"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/testenv"
)

// pauseEnv is agentcmd.PauseEnv, which only a moat_testhooks build defines.
const pauseEnv = "MOAT_AGENT_TEST_PAUSE"

// The device build, run as a real process so that a test can kill it as a power cut does.
var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func agentBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "moat-agent-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "moat-agent")
		// The fault-injection pause exists only in a build with this tag, never in the
		// device's (internal/agentcmd/testhooks.go).
		cmd := exec.Command("go", "build", "-tags", "moat_testhooks", "-o", binPath, "../../cmd/moat-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("%w: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("build moat-agent: %v", binErr)
	}
	return binPath
}

// syncBuffer collects a process's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// agentProc is moat-agent running for a device.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

// spawn starts moat-agent for d on state; pause, when set, is the update step at which it
// stops until killed.
func (f *fleet) spawn(t *testing.T, d testenv.Device, state, pause string) *agentProc {
	t.Helper()
	return f.spawnWith(t, d, state, pause, "1h")
}

// spawnWith is spawn with the check interval given.
func (f *fleet) spawnWith(t *testing.T, d testenv.Device, state, pause, interval string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	root, ca := filepath.Join(dir, "1.root.json"), filepath.Join(dir, "server-ca.pem")
	if err := os.WriteFile(root, f.Root, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, f.Server.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(agentBinary(t), "agent", "--state", state, "--server", f.Server.DeviceURL, "--identity", d.Key.Path(),
		"--root", root, "--server-ca", ca, "--check-interval", interval, "--health-timeout", "10s", "--log-level", "debug", "--product", "DW100")
	cmd.Env = append(os.Environ(), pauseEnv+"="+pause)
	p := &agentProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

// kill is the power cut: SIGKILL, no chance to clean up.
func (p *agentProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *agentProc) waitFor(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.stderr.String(), marker) {
		select {
		case <-p.done:
			t.Fatalf("moat-agent exited before %q:\n%s", marker, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("moat-agent did not reach %q within 60 s:\n%s", marker, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkBootable asserts the invariant of a power cut without changing anything (the
// launcher would use up a try): the committed OS and app slots verify against the pinned
// root, or, where nothing is committed yet, the slot on trial does.
func checkBootable(t *testing.T, f *fleet, state, when string) boot.Record {
	t.Helper()
	rec, err := boot.ReadRecord(state)
	if err != nil {
		t.Fatalf("after a kill %s: boot record: %v", when, err)
	}
	slots, err := boot.New(boot.Config{StateDir: state, Root: f.Root, Tries: boot.DefaultTries, MaxPayloadBytes: boot.DefaultMaxPayloadBytes})
	if err != nil {
		t.Fatal(err)
	}
	for kind, st := range map[image.Kind]boot.SlotState{image.KindOS: rec.OS, image.KindApp: rec.App} {
		slot := st.Active
		if slot == "" {
			slot = st.Pending
		}
		if slot == "" {
			t.Fatalf("after a kill %s: no %s slot at all", when, kind)
		}
		if _, err := boot.Verify(f.Root, slots.SlotDir(kind, slot), kind, st.Images[slot], boot.DefaultMaxPayloadBytes); err != nil {
			t.Fatalf("after a kill %s: the %s slot %s does not verify: %v", when, kind, slot, err)
		}
	}
	return rec
}

// queueMarker puts a report into the device's queue while no agent runs, so the test can
// check that nothing queued is lost across kills.
func queueMarker(t *testing.T, state string, n int) string {
	t.Helper()
	q, err := errqueue.Open(errqueue.Config{Dir: filepath.Join(state, "errors"), Now: time.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r := errreport.Report{ID: errreport.NewID(time.Now()), Kind: errreport.Agent, At: time.Now().UTC().Truncate(time.Second),
		Code: "marker_" + strconv.Itoa(n), Message: "queued before power cut " + strconv.Itoa(n)}
	if err := q.Put(r); err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// TestAgent_SurvivesPowerLossAtEveryUpdateStep kills moat-agent (SIGKILL, as a power cut)
// at each step of an app update (downloaded, installed, the new app on trial, committed)
// and restarts it: after every kill the device boots a verified OS and app, the update
// finishes, and every report queued along the way reaches the server.
func TestAgent_SurvivesPowerLossAtEveryUpdateStep(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	state := t.TempDir()
	markers := []string{queueMarker(t, state, 0)}

	p := f.spawn(t, d, state, "")
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))
	p.kill()
	checkBootable(t, f, state, "while idle")

	v11 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(v11.Path)
	for i, step := range []string{"downloaded", "installed", "trial", "committed"} {
		markers = append(markers, queueMarker(t, state, i+1))
		p := f.spawn(t, d, state, step)
		p.waitFor(t, "PAUSED "+step)
		p.kill()
		rec := checkBootable(t, f, state, "at "+step)
		t.Logf("killed at %s: app active %s, pending %q with %d tries left", step, rec.App.Images[rec.App.Active].Path, rec.App.Pending, rec.App.TriesLeft)
	}
	p = f.spawn(t, d, state, "")
	eventually(t, "the update finished after the kills", attested(f, t, d.ID, f.os.Path, v11.Path))
	rec, err := boot.ReadRecord(state)
	if err != nil || rec.App.Pending != "" || rec.App.Images[rec.App.Active].Path != v11.Path {
		t.Errorf("boot record after the update: %+v, %v; want %s committed", rec.App, err, v11.Path)
	}
	eventually(t, "every queued report reached the server", func() (bool, string) {
		got, err := f.Admin.ListErrorReports(context.Background(), f.Tenant, d.ID, client.ListOptions{Limit: 1000})
		if err != nil {
			return false, err.Error()
		}
		have := map[string]bool{}
		for _, r := range got.Items {
			have[r.Report.ID] = true
		}
		for _, m := range markers {
			if !have[m] {
				return false, "missing " + m
			}
		}
		return true, ""
	})
	p.kill()
}

// bootProc runs `moat-agent boot` (the launcher) for d on state.
func (f *fleet) bootProc(t *testing.T, d testenv.Device, state string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	root, ca := filepath.Join(dir, "1.root.json"), filepath.Join(dir, "server-ca.pem")
	if err := os.WriteFile(root, f.Root, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, f.Server.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(agentBinary(t), "boot", "--state", state, "--root", root, "--",
		"--server", f.Server.DeviceURL, "--identity", d.Key.Path(), "--server-ca", ca, "--check-interval", "2s", "--health-timeout", "10s")
	p := &agentProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the launcher and its agent, killed together
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
	return p
}

// TestBoot_NewOSAgentOrRollBack runs the launcher, `moat-agent boot`, with OS images whose
// bin/moat-agent is the real device build: the factory agent installs OS 1.0.0 and exits
// to reboot, the launcher verifies and runs the slot's agent on trial, which attests and
// commits. Then OS 2.0.0, whose agent never comes up, uses up its tries at boot and is
// rolled back to 1.0.0, which attests again and reports the failed update.
func TestBoot_NewOSAgentOrRollBack(t *testing.T) {
	t.Parallel()
	bin, err := os.ReadFile(agentBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewPlatform(t)
	f := &fleet{Platform: p}
	f.os = p.PublishOSWith("moat-os", "1.0.0", 1, bin, "Retail")
	f.app = p.PublishAppWith("dw100-app", "1.0.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(f.app.Path)
	d := f.NewDevice(true, "DW100/Production")
	state := t.TempDir()
	lp := f.bootProc(t, d, state)
	eventually(t, "the OS agent attests", attested(f, t, d.ID, f.os.Path, f.app.Path))
	lp.waitFor(t, "booting OS slot")
	if rec, err := boot.ReadRecord(state); err != nil || rec.OS.Pending != "" || rec.OS.Images[rec.OS.Active].Path != f.os.Path {
		t.Fatalf("boot record: %+v, %v; want %s committed", rec.OS, err, f.os.Path)
	}

	broken := p.PublishOSWith("moat-os", "2.0.0", 1, []byte("#!/bin/sh\necho 'moat-os 2.0.0: cannot mount data partition' >&2\nexit 1\n"), "Retail")
	_ = broken
	eventually(t, "2.0.0 rolled back and reported", func() (bool, string) {
		got, err := f.Admin.ListErrorReports(context.Background(), f.Tenant, d.ID, client.ListOptions{Limit: 1000})
		if err != nil {
			return false, err.Error()
		}
		for _, r := range got.Items {
			if r.Report.Code == "os_rolled_back" && r.Report.Target == "os/moat-os/2.0.0" {
				return true, ""
			}
		}
		return false, lp.stderr.String()[max(0, len(lp.stderr.String())-2000):]
	})
	eventually(t, "back on 1.0.0", attested(f, t, d.ID, f.os.Path, f.app.Path))
}
