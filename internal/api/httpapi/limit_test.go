package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/problem"
)

// TestLimiter_QueuedRequestIsServedWhenASlotFrees: past the cap a request waits in the
// queue and takes the first slot that frees, instead of being refused while the server has
// capacity a moment later (issue 15's reconnect storm).
func TestLimiter_QueuedRequestIsServedWhenASlotFrees(t *testing.T) {
	t.Parallel()
	l := httpapi.NewQueuedLimiter(1, 1, time.Minute)
	release, err := l.Acquire(t.Context(), http.Header{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		r, err := l.Acquire(t.Context(), http.Header{})
		if err == nil {
			r()
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it queue; the outcome does not depend on it
	release()
	if err := <-got; err != nil {
		t.Fatalf("queued Acquire = %v, want the freed slot", err)
	}
}

// TestLimiter_RefusesPastTheQueueAndAfterTheWait: the queue is bounded, and so is the wait;
// each refusal is a 503 problem with Retry-After.
func TestLimiter_RefusesPastTheQueueAndAfterTheWait(t *testing.T) {
	t.Parallel()
	l := httpapi.NewQueuedLimiter(1, 1, 50*time.Millisecond)
	if _, err := l.Acquire(t.Context(), http.Header{}); err != nil { // the slot, never released
		t.Fatal(err)
	}
	// Two more: at most one fits the queue, and it is refused when its wait ends; the other
	// is refused at once, or queues after the first left and is refused after its wait.
	start := time.Now()
	hs := []http.Header{{}, {}}
	errs := make(chan error, len(hs))
	for _, h := range hs {
		go func() { _, err := l.Acquire(t.Context(), h); errs <- err }()
	}
	for range hs {
		err := <-errs
		if pe, ok := errors.AsType[*problem.Error](err); !ok || pe.Kind != problem.Unavailable || pe.Code != "server_busy" {
			t.Errorf("Acquire with the slot held = %v, want an Unavailable server_busy problem", err)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("refusals took %v, want each within the wait", d)
	}
	for _, h := range hs {
		if h.Get("Retry-After") == "" {
			t.Error("a refusal without Retry-After")
		}
	}
}

// TestLimiter_QueueIsBounded: with the slot held and room in the queue for one, of two
// more requests one is refused at once while the other waits (until its client leaves).
func TestLimiter_QueueIsBounded(t *testing.T) {
	t.Parallel()
	l := httpapi.NewQueuedLimiter(1, 1, time.Hour)
	if _, err := l.Acquire(t.Context(), http.Header{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	results := make(chan error, 2)
	for range 2 {
		go func() { _, err := l.Acquire(ctx, http.Header{}); results <- err }()
	}
	select {
	case err := <-results:
		if err == nil {
			t.Fatal("Acquire with the slot held = nil, want a refusal")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("neither request was refused: the queue is not bounded")
	}
	select {
	case err := <-results:
		t.Fatalf("the queued request ended (%v) before its wait or its client did", err)
	default:
	}
	cancel()
	if err := <-results; err == nil {
		t.Fatal("the queued Acquire after its context ended = nil, want a refusal")
	}
}
