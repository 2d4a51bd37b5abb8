package server_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/testenv"
)

// runLog records which replica ran a job at which claim time.
type runLog struct {
	mu   sync.Mutex
	runs []jobRun
	more chan struct{} // a value after every run
}

type jobRun struct {
	replica string
	at      time.Time
}

func (l *runLog) job(replica string, interval time.Duration) server.Job {
	return server.Job{Name: "count-runs", Interval: interval, Run: func(_ context.Context, now time.Time) error {
		l.mu.Lock()
		l.runs = append(l.runs, jobRun{replica, now})
		l.mu.Unlock()
		select {
		case l.more <- struct{}{}:
		default:
		}
		return nil
	}}
}

func (l *runLog) snapshot() []jobRun {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.runs)
}

// waitFor waits until cond holds for the runs so far, failing the test at the deadline.
func (l *runLog) waitFor(t *testing.T, what string, cond func([]jobRun) bool) []jobRun {
	t.Helper()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		if runs := l.snapshot(); cond(runs) {
			return runs
		}
		select {
		case <-l.more:
		case <-deadline.C:
			t.Fatalf("no %s within 60s; runs: %v", what, l.snapshot())
		}
	}
}

// TestServer_JobsRunOnOneReplica is seam 5: two servers on one PostgreSQL run a leased job,
// and each period it runs on exactly one of them: any two runs, on whichever replica, are
// at least an interval apart. When the replica that ran last stops, the other takes the
// job over once that period's lease lapses.
func TestServer_JobsRunOnOneReplica(t *testing.T) {
	t.Parallel()
	dsn := testenv.FreshPostgresDatabase(t)
	const interval = 400 * time.Millisecond
	log := &runLog{more: make(chan struct{}, 1)}

	cfgA := server.DefaultConfig()
	cfgA.Addr, cfgA.DeviceAddr, cfgA.DataDir, cfgA.Database = "127.0.0.1:0", "127.0.0.1:0", t.TempDir(), dsn
	cfgB := cfgA
	cfgB.DataDir = t.TempDir()
	// Replicas share the online key and the CA key-encryption key (made by A's first start).
	cfgB.OnlineKey = filepath.Join(cfgA.DataDir, "keys", "online.key")
	cfgB.CAKeyKEK = filepath.Join(cfgA.DataDir, "keys", "ca.kek")

	type replica struct {
		cancel context.CancelFunc
		done   chan error
	}
	replicas := map[string]replica{}
	start := func(name string, cfg server.Config) {
		ctx, cancel := context.WithCancel(t.Context())
		s, err := server.Open(ctx, cfg, quietLog())
		if err != nil {
			cancel()
			t.Fatalf("server.Open(%s): %v", name, err)
		}
		if err := s.AddJob(log.job(name, interval)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx) }()
		replicas[name] = replica{cancel, done}
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve(%s): %v", name, err)
			}
		})
	}
	start("A", cfgA)
	start("B", cfgB)

	runs := log.waitFor(t, "8 runs", func(r []jobRun) bool { return len(r) >= 8 })
	checkSpacing(t, runs, interval)

	holder := runs[len(runs)-1]
	other := map[string]string{"A": "B", "B": "A"}[holder.replica]
	r := replicas[holder.replica]
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("Serve(%s): %v", holder.replica, err)
	}
	r.done <- nil // for the cleanup
	stopped := len(log.snapshot())
	runs = log.waitFor(t, "run by "+other+" after "+holder.replica+" stopped", func(r []jobRun) bool {
		return len(r) > stopped && r[len(r)-1].replica == other && r[len(r)-1].at.After(holder.at)
	})
	checkSpacing(t, runs, interval)
	for _, r := range runs[stopped:] {
		if r.replica == holder.replica {
			t.Errorf("stopped replica %s ran the job at %v", holder.replica, r.at)
		}
	}
}

// checkSpacing fails unless consecutive runs are at least interval apart (less a
// millisecond: PostgreSQL keeps microseconds).
func checkSpacing(t *testing.T, runs []jobRun, interval time.Duration) {
	t.Helper()
	for i := 1; i < len(runs); i++ {
		if d := runs[i].at.Sub(runs[i-1].at); d < interval-time.Millisecond {
			t.Errorf("runs %d (%s at %v) and %d (%s at %v) are %v apart, want at least %v: two replicas ran one period",
				i-1, runs[i-1].replica, runs[i-1].at.Format(time.StampMicro), i, runs[i].replica, runs[i].at.Format(time.StampMicro), d, interval)
		}
	}
}

// TestServer_JobsUseInjectedClock is defect 12: the nonce pruning job reads the server's
// clock, not time.Now. The clock is two hours ahead, so a nonce that expires in an hour of
// real time is already expired for the server, and the first run at start removes it.
func TestServer_JobsUseInjectedClock(t *testing.T) {
	t.Parallel()
	ahead := func() time.Time { return time.Now().Add(2 * time.Hour) }
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DeviceAddr, cfg.DataDir, cfg.Now = "127.0.0.1:0", "127.0.0.1:0", t.TempDir(), ahead
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, err := server.Open(ctx, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	spend := func() error {
		return s.Store().InTx(ctx, func(tx store.Tx) error {
			return tx.Nonces().Spend(ctx, "dev-1", "nonce-1", time.Now().Add(time.Hour), time.Now())
		})
	}
	if err := spend(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The spent nonce expires in an hour by the wall clock, but the server's clock is
		// two hours ahead: its pruning job must remove it, after which it spends again.
		err := spend()
		if err == nil {
			break // pruned
		}
		if !errors.Is(err, store.ErrNonceUsed) {
			t.Fatalf("Spend(spent nonce) = %v, want ErrNonceUsed until pruned, then nil", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the nonce that expired by the server's clock was not pruned within 30s")
		}
		time.Sleep(10 * time.Millisecond) // polling, not an assertion
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
