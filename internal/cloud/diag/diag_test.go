package diag_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/diag"
	"github.com/moat-iot/moat/internal/telemetry"
)

var dev = strings.Repeat("d", 64)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type sent struct {
	mu   sync.Mutex
	reqs []telemetry.DiagnosticRequest
	fail error
}

func (s *sent) publish(_ context.Context, device, id string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	r, err := telemetry.DecodeRequest(data)
	if err != nil || r.ID != id || device != dev {
		return errors.New("bad request published")
	}
	s.reqs = append(s.reqs, r)
	return nil
}

const maxWaiters = 16

func newService(t *testing.T) (*diag.Service, *cloudstore.Store, *clock, *sent) {
	t.Helper()
	st, err := cloudstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "cloud.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.UpsertDevice(t.Context(), cloudstore.Device{ID: dev, Product: "DW100", CertNotAfter: time.Now().Add(time.Hour), CertSerial: "01"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Now()}
	s := &sent{}
	svc, err := diag.New(diag.Config{Store: st, Publish: s.publish, Timeout: time.Minute, Now: clk.Now, MaxWaiters: maxWaiters})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st, clk, s
}

// TestRun_PublishesAndWaitEndsOnReply: a request is stored, published with its deadline,
// and a waiter returns as soon as the device's reply is recorded.
func TestRun_PublishesAndWaitEndsOnReply(t *testing.T) {
	svc, st, clk, s := newService(t)
	d, err := svc.Run(t.Context(), diag.Request{Device: dev, Command: "heater-self-test", RequestedBy: "user:alice"})
	if err != nil {
		t.Fatal(err)
	}
	if d.State != cloudstore.DiagnosticSent || len(s.reqs) != 1 || s.reqs[0].Command != "heater-self-test" || !s.reqs[0].Deadline.Equal(d.Deadline) {
		t.Fatalf("after Run: %+v, published %+v", d, s.reqs)
	}
	done := make(chan cloudstore.Diagnostic)
	go func() {
		got, _ := svc.Wait(context.Background(), d.ID, time.Minute)
		done <- got
	}()
	reply := telemetry.DiagnosticReply{V: 1, ID: d.ID, OK: true, Result: []byte(`{"verdict":"ok"}`), At: clk.Now()}
	if _, err := st.FinishDiagnostic(t.Context(), dev, reply, clk.Now()); err != nil {
		t.Fatal(err)
	}
	svc.Finished(d.ID)
	select {
	case got := <-done:
		if got.State != cloudstore.DiagnosticSucceeded {
			t.Errorf("Wait = %+v, want succeeded", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the reply")
	}
}

// TestExpire_TimesOutAndWakesWaiters: past the deadline a request times out, its waiter
// returns, and a late reply changes nothing.
func TestExpire_TimesOutAndWakesWaiters(t *testing.T) {
	svc, st, clk, _ := newService(t)
	d, err := svc.Run(t.Context(), diag.Request{Device: dev, Command: "heater-self-test", RequestedBy: "rule:heater", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan cloudstore.Diagnostic)
	go func() {
		got, _ := svc.Wait(context.Background(), d.ID, time.Minute)
		done <- got
	}()
	clk.add(2 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	var got cloudstore.Diagnostic
	for {
		if err := svc.Expire(t.Context()); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-done:
		case <-time.After(50 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("the waiter was not woken by the timeout")
			}
			continue
		}
		break
	}
	if got.State != cloudstore.DiagnosticTimedOut {
		t.Fatalf("Wait = %+v, want timed_out", got)
	}
	late := telemetry.DiagnosticReply{V: 1, ID: d.ID, OK: true, At: clk.Now()}
	if _, err := st.FinishDiagnostic(t.Context(), dev, late, clk.Now()); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("a late reply: %v, want ErrConflict", err)
	}
}

// TestRun_RefusesBadRequestsAndStoresNothing: a bad command or timeout stores nothing and
// publishes nothing; a request that cannot be published stays pending (it will time out).
func TestRun_RefusesBadRequestsAndStoresNothing(t *testing.T) {
	svc, st, _, s := newService(t)
	for _, r := range []diag.Request{
		{Device: dev, Command: "rm -rf /", RequestedBy: "user:a"},
		{Device: dev, Command: "x", RequestedBy: "user:a", Timeout: 48 * time.Hour},
		{Device: "nope", Command: "x", RequestedBy: "user:a"},
	} {
		if _, err := svc.Run(t.Context(), r); !errors.Is(err, cloudstore.ErrInvalid) {
			t.Errorf("Run(%+v) = %v, want ErrInvalid", r, err)
		}
	}
	ds, err := st.ListDiagnostics(t.Context(), cloudstore.DiagnosticFilter{})
	if err != nil || len(ds) != 0 || len(s.reqs) != 0 {
		t.Fatalf("after bad requests: stored %v (%v), published %d", ds, err, len(s.reqs))
	}
	s.fail = errors.New("broker down")
	d, err := svc.Run(t.Context(), diag.Request{Device: dev, Command: "x", RequestedBy: "user:a"})
	if err != nil || d.State != cloudstore.DiagnosticPending {
		t.Errorf("Run while the broker is down = %+v, %v; want a pending request", d, err)
	}
}

// TestWait_BoundedWaiters: at most Config.MaxWaiters callers wait at once; the next is
// told ErrBusy at once.
func TestWait_BoundedWaiters(t *testing.T) {
	svc, _, _, _ := newService(t)
	d, err := svc.Run(t.Context(), diag.Request{Device: dev, Command: "x", RequestedBy: "user:a", Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range maxWaiters {
		wg.Go(func() { _, _ = svc.Wait(ctx, d.ID, time.Minute) })
	}
	for end := time.Now().Add(30 * time.Second); svc.Waiting() < maxWaiters; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d waiters registered, want %d", svc.Waiting(), maxWaiters)
		}
	}
	_, busy := svc.Wait(t.Context(), d.ID, time.Minute)
	cancel()
	wg.Wait()
	if !errors.Is(busy, diag.ErrBusy) {
		t.Errorf("waiter %d: %v, want ErrBusy at once", maxWaiters+1, busy)
	}
	if n := svc.Waiting(); n != 0 {
		t.Errorf("%d waiters left after they gave up, want 0", n)
	}
}
