package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/testenv"
)

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	err := outbox.Config{Batch: -1, Concurrency: 1000, MaxAttempts: -1, Handlers: outbox.Handlers{"x": nil}}.Validate()
	for _, want := range []string{"store", "now", "logger", "batch", "concurrency", "max_attempts", "nil handler"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}

func TestWorker_RetriesThenDone(t *testing.T) {
	t.Parallel()
	s := openStore(t, "")
	c := &clock{now: t0}
	var calls atomic.Int32
	hs := outbox.Handlers{"flaky": func(_ context.Context, j outbox.Job) (string, error) {
		if calls.Add(1) < 3 {
			return "", errors.New("temporary")
		}
		if j.Attempt != 3 || j.Key != "k" {
			t.Errorf("job = %+v, want attempt 3 of k", j)
		}
		return "ok", nil
	}}
	reg := prometheus.NewRegistry()
	w := newWorker(t, s, hs, c.Now, reg)
	enqueue(t, s, t0, "flaky", "k", map[string]any{})
	for i := range 3 {
		if n, err := w.RunOnce(t.Context()); n != 1 || err != nil {
			t.Fatalf("RunOnce #%d = %d, %v", i, n, err)
		}
		// Not due again before its backoff.
		if n, _ := w.RunOnce(t.Context()); n != 0 {
			t.Fatalf("RunOnce right after attempt %d = %d rows, want 0 (backoff)", i+1, n)
		}
		c.Advance(2 * time.Hour)
	}
	if r := row(t, s, "k"); r.State != cloudstore.OutboxDone || r.Result != "ok" || r.Attempts != 3 {
		t.Errorf("row = %+v, want done after 3 attempts", r)
	}
	if got := metricValue(t, reg, "moat_cloud_outbox_retried_total", "flaky"); got != 2 {
		t.Errorf("retried_total{flaky} = %v, want 2", got)
	}
	if got := metricValue(t, reg, "moat_cloud_outbox_done_total", "flaky"); got != 1 {
		t.Errorf("done_total{flaky} = %v, want 1", got)
	}
}

// metricValue reads one counter series of reg (kind "" for a metric without labels).
func metricValue(t *testing.T, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if kind == "" && len(m.GetLabel()) == 0 {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{kind=%q}", name, kind)
	return 0
}

func TestWorker_DeadEndings(t *testing.T) {
	t.Parallel()
	s := openStore(t, "")
	c := &clock{now: t0}
	var panics atomic.Int32
	hs := outbox.Handlers{
		"refused": func(context.Context, outbox.Job) (string, error) {
			return "", outbox.Permanent(errors.New("550 no such user"))
		},
		"always": func(context.Context, outbox.Job) (string, error) { return "", errors.New("down") },
		"panics": func(context.Context, outbox.Job) (string, error) {
			if panics.Add(1) == 1 {
				panic("boom")
			}
			return "recovered", nil
		},
	}
	reg := prometheus.NewRegistry()
	w, err := outbox.New(outbox.Config{Store: s, Handlers: hs, Now: c.Now, Logger: testLogger(t), Registerer: reg, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"refused", "always", "panics", "nobody-handles-this"} {
		enqueue(t, s, t0, k, k, map[string]any{})
	}
	for range 4 {
		if _, err := w.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.Advance(2 * time.Hour)
	}
	if r := row(t, s, "refused"); r.State != cloudstore.OutboxDead || r.Attempts != 1 || !strings.Contains(r.LastError, "550") {
		t.Errorf("permanent error: row = %+v, want dead after 1 attempt", r)
	}
	if r := row(t, s, "always"); r.State != cloudstore.OutboxDead || r.Attempts != 3 || !strings.Contains(r.LastError, "gave up after 3 attempts") {
		t.Errorf("temporary errors: row = %+v, want dead after MaxAttempts 3", r)
	}
	if r := row(t, s, "panics"); r.State != cloudstore.OutboxDone || r.Attempts != 2 || !strings.Contains(r.LastError, "panicked") {
		t.Errorf("panic: row = %+v, want retried, then done", r)
	}
	if r := row(t, s, "nobody-handles-this"); r.State != cloudstore.OutboxDead || !strings.Contains(r.LastError, `no handler for kind "nobody-handles-this"`) {
		t.Errorf("unknown kind: row = %+v, want dead naming the kind", r)
	}
	if got := metricValue(t, reg, "moat_cloud_outbox_dead_total", "other"); got != 1 {
		t.Errorf("dead_total{other} = %v, want 1 (unknown kinds share one label)", got)
	}
}

// A worker that stalls past its lease loses the row to another worker; when it finally
// returns, its outcome must not overwrite the other's (and it says so in a metric).
func TestWorker_StaleLeaseCannotOverwrite(t *testing.T) {
	t.Parallel()
	s := openStore(t, "")
	c := &clock{now: t0}
	release := make(chan struct{})
	started := make(chan struct{})
	slow := outbox.Handlers{"job": func(ctx context.Context, j outbox.Job) (string, error) {
		close(started)
		<-release
		return "stale success", nil
	}}
	fast := outbox.Handlers{"job": func(context.Context, outbox.Job) (string, error) { return "", errors.New("second attempt failed") }}
	regA := prometheus.NewRegistry()
	a, err := outbox.New(outbox.Config{Store: s, Handlers: slow, Now: c.Now, Logger: testLogger(t), Registerer: regA, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b := newWorker(t, s, fast, c.Now, nil)
	enqueue(t, s, t0, "job", "k", map[string]any{})
	done := make(chan error, 1)
	go func() { _, err := a.RunOnce(t.Context()); done <- err }()
	<-started
	c.Advance(2 * time.Hour) // a's lease is over
	if n, err := b.RunOnce(t.Context()); n != 1 || err != nil {
		t.Fatalf("b.RunOnce = %d, %v, want the row taken over", n, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("a.RunOnce = %v, want the lost lease handled quietly", err)
	}
	// b's outcome (retry later) stands: a's late success is not recorded, so the row is
	// tried again rather than marked done by an attempt that no longer owned it.
	if r := row(t, s, "k"); r.State != cloudstore.OutboxPending || r.Result != "" || r.LastError != "second attempt failed" {
		t.Errorf("row = %+v, want b's outcome", r)
	}
	if got := metricValue(t, regA, "moat_cloud_outbox_lease_lost_total", ""); got != 1 {
		t.Errorf("lease_lost_total = %v, want 1", got)
	}
}

func TestWorker_BoundedConcurrency(t *testing.T) {
	t.Parallel()
	s := openStore(t, "")
	var running, peak atomic.Int32
	gate := make(chan struct{})
	hs := outbox.Handlers{"job": func(ctx context.Context, _ outbox.Job) (string, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-gate
		running.Add(-1)
		return "ok", nil
	}}
	w, err := outbox.New(outbox.Config{Store: s, Handlers: hs, Now: func() time.Time { return t0 }, Logger: testLogger(t), Concurrency: 3, Batch: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		enqueue(t, s, t0, "job", "k"+string(rune('a'+i)), map[string]any{})
	}
	done := make(chan int, 1)
	go func() { n, _ := w.RunOnce(t.Context()); done <- n }()
	deadline := time.After(10 * time.Second)
	for running.Load() < 3 {
		select {
		case <-deadline:
			t.Fatal("3 handlers never ran at once")
		case <-time.After(time.Millisecond):
		}
	}
	close(gate)
	if n := <-done; n != 10 {
		t.Errorf("RunOnce = %d, want 10", n)
	}
	if p := peak.Load(); p != 3 {
		t.Errorf("peak concurrency = %d, want 3", p)
	}
}

func TestWorker_RunAndKick(t *testing.T) {
	t.Parallel()
	s := openStore(t, "")
	got := make(chan string, 1)
	hs := outbox.Handlers{"job": func(_ context.Context, j outbox.Job) (string, error) { got <- j.Key; return "ok", nil }}
	w, err := outbox.New(outbox.Config{Store: s, Handlers: hs, Now: time.Now, Logger: testLogger(t), Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(ctx) }()
	enqueue(t, s, time.Now(), "job", "kicked", map[string]any{})
	for range 3 {
		w.Kick() // never blocks, however often
	}
	select {
	case k := <-got:
		if k != "kicked" {
			t.Errorf("handled %s", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Kick did not wake Run (Poll is an hour)")
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestRetryAfter_Wraps(t *testing.T) {
	t.Parallel()
	base := errors.New("busy")
	err := outbox.RetryAfter(base, time.Minute)
	if !errors.Is(err, base) || outbox.IsPermanent(err) || outbox.RetryAfter(nil, time.Second) != nil {
		t.Errorf("RetryAfter = %v", err)
	}
}

// Several cloud replicas, each with its own Worker, share one PostgreSQL database: every
// row is performed once.
func TestWorker_ReplicasShareRowsOnPostgres(t *testing.T) {
	t.Parallel()
	s, err := cloudstore.Open(t.Context(), cloudstore.Config{Database: cloudstore.Postgres, PostgresDSN: testenv.FreshPostgresDatabase(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	const n = 100
	for i := range n {
		enqueue(t, s, t0, "job", fmt.Sprintf("k%03d", i), map[string]any{})
	}
	var mu sync.Mutex
	seen := map[string]int{}
	hs := outbox.Handlers{"job": func(_ context.Context, j outbox.Job) (string, error) {
		mu.Lock()
		seen[j.Key]++
		mu.Unlock()
		return "ok", nil
	}}
	var wg sync.WaitGroup
	for range 3 {
		w, err := outbox.New(outbox.Config{Store: s, Handlers: hs, Now: func() time.Time { return t0 }, Logger: testLogger(t), Batch: 7, Concurrency: 3})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for {
				k, err := w.RunOnce(t.Context())
				if err != nil {
					t.Errorf("RunOnce = %v", err)
					return
				}
				if k == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Errorf("performed %d distinct rows, want %d", len(seen), n)
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("%s performed %d times, want once", k, c)
		}
	}
}
