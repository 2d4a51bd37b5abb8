package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestAgent_AppSegfaultRestartsOnlyTheApp is ATTACKS row 29: the running, committed app
// dies of SIGSEGV. Only the app restarts (a new process of the same image; the agent keeps
// running, with no reboot, no rollback and nothing marked bad), and a crash report naming
// the signal, the image and the app's last words reaches the server.
func TestAgent_AppSegfaultRestartsOnlyTheApp(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	state := t.TempDir()
	pids := make(chan int, 16)
	logs := &testenv.SyncBuffer{}
	cfg := f.agentConfig(t, d, state)
	cfg.Logger = slog.New(slog.NewTextHandler(teeLog{tlog{t}, logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Telemetry = func(_ context.Context, topic string, payload []byte) error {
		var who struct{ PID int }
		if topic == "whoami" && json.Unmarshal(payload, &who) == nil {
			pids <- who.PID
		}
		return nil
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))
	// A fresh device attests from its factory OS before its OS slot is installed: wait
	// until both slots are installed and committed, so that the record is the settled one.
	var before boot.Record
	eventually(t, "OS and app installed and committed", func() (bool, string) {
		r, err := boot.ReadRecord(state)
		if err != nil {
			return false, err.Error()
		}
		before = r
		return r.OS.Active != "" && r.OS.Pending == "" && r.App.Active != "" && r.App.Pending == "",
			fmt.Sprintf("OS %+v, app %+v", r.OS, r.App)
	})
	// The app that runs now (the first start after the install may have been replaced by
	// the committed one's: take the last PID published).
	pid := latestPID(t, pids)
	bootsBefore := strings.Count(logs.String(), "rebooting in process")

	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil { // the test app's cue to segfault
		t.Fatal(err)
	}
	dv := &device{Device: d, state: state}
	eventually(t, "the crash report reaches the server", func() (bool, string) {
		rs := f.reports(t, dv)
		return hasReport(rs, func(r errreport.Report) bool {
			return r.Kind == errreport.AppCrash && r.Signal == "SIGSEGV" && r.ImagePath == f.app.Path && r.ExitCode == nil &&
				strings.Contains(r.StderrTail, "segmentation fault")
		}), kinds(rs)
	})
	select {
	case next := <-pids:
		if next == pid {
			t.Errorf("the app published again from PID %d, the process that crashed", pid)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the app was not restarted within 60 s")
	}

	select {
	case err := <-done:
		t.Fatalf("the agent stopped when the app crashed: %v", err)
	default:
	}
	if n := strings.Count(logs.String(), "rebooting in process"); n != bootsBefore {
		t.Errorf("the device rebooted after the app crashed (%d reboots, %d before)", n, bootsBefore)
	}
	after, err := boot.ReadRecord(state)
	if err != nil {
		t.Fatal(err)
	}
	if after.App.Active != before.App.Active || after.App.Pending != "" || len(after.App.Bad) != 0 ||
		after.OS.Active != before.OS.Active || after.OS.Pending != "" || len(after.OS.Bad) != 0 {
		t.Errorf("boot record after the crash: OS %+v, app %+v; want them as before (OS %s, app %s active, nothing pending or bad)",
			after.OS, after.App, before.OS.Active, before.App.Active)
	}
	eventually(t, "the device still attests with the same images", attested(f, t, d.ID, f.os.Path, f.app.Path))
}

// latestPID waits for the app's first whoami and returns the last PID published so far.
func latestPID(t *testing.T, pids chan int) int {
	t.Helper()
	var pid int
	select {
	case pid = <-pids:
	case <-time.After(60 * time.Second):
		t.Fatal("the app never published whoami")
	}
	for {
		select {
		case pid = <-pids:
		default:
			return pid
		}
	}
}

// teeLog writes the agent's log to the test's and keeps it.
type teeLog struct {
	tlog
	buf *testenv.SyncBuffer
}

func (w teeLog) Write(p []byte) (int, error) {
	w.buf.Write(p)
	return w.tlog.Write(p)
}
