package attestation_test

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/attestation"
)

// startRun runs c.Run until the returned stop is called; stop fails the test unless Run
// returns nil promptly.
func startRun(t *testing.T, c *attestation.Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil after cancel", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestRun_RenewsWhenDueAndSleeps: Run renews a certificate past two thirds of its lifetime,
// then sleeps until the next renewal time: no further attestation.
func TestRun_RenewsWhenDueAndSleeps(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := e.NewDevice(true, "DW100/Production")
	cfg, _ := e.config(t, d)
	c := newClient(t, cfg)
	first, err := c.Certificate(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	e.advance(18 * time.Hour)
	attempted := attestation.Attempted(c)
	stop := startRun(t, c)
	waitAttempt(t, attempted, "Run did not renew a certificate due for renewal")
	next := attestation.Attempted(c)
	second, err := c.Certificate(t.Context())
	if err != nil || serial(second) == serial(first) {
		t.Fatalf("Certificate after Run renewed = %v, %v; want a new certificate", second.Leaf, err)
	}
	if chain := storedChain(t, cfg.StateDir); !bytes.Equal(chain[0].Raw, second.Certificate[0]) {
		t.Error("the certificate file does not hold the renewed certificate")
	}
	select {
	case <-next:
		t.Fatal("Run attested again right after renewing")
	case <-time.After(300 * time.Millisecond):
	}
	stop()
	if n := len(e.certs(t, d.ID)); n != 2 {
		t.Errorf("%d certificates, want 2", n)
	}
}

// TestRun_AttestsAtStartAndRetries: Run attests at once; after a refusal it retries after
// the backoff and gets a certificate once the device is allowed again.
func TestRun_AttestsAtStartAndRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := e.NewDevice(true, "DW100/Production")
	e.Update(d.ID, client.DeviceUpdate{Blocked: ptr(true)})
	cfg, _ := e.config(t, d)
	c := newClient(t, cfg)

	attempted := attestation.Attempted(c)
	startRun(t, c)
	waitAttempt(t, attempted, "Run did not attest at start")
	next := attestation.Attempted(c)
	if n, retryAt := attestation.Failures(c); n != 1 || retryAt.Sub(e.now()) > attestation.MinBackoff {
		t.Fatalf("after a refusal: %d failures, retry in %s; want 1, within %s", n, retryAt.Sub(e.now()), attestation.MinBackoff)
	}
	e.Update(d.ID, client.DeviceUpdate{Blocked: ptr(false)})
	waitAttempt(t, next, "Run did not retry after a refusal")
	if n, _ := attestation.Failures(c); n != 0 {
		t.Fatalf("retry after unblocking failed: %d failures", n)
	}
	if self, err := c.API().GetDeviceSelf(t.Context()); err != nil || self.ID != d.ID {
		t.Errorf("GetDeviceSelf = %+v, %v; want device %s", self, err, d.ID)
	}
	if n := len(e.certs(t, d.ID)); n != 1 {
		t.Errorf("%d certificates, want 1", n)
	}
}

// TestRun_LeavesNoGoroutines: after Run returns and idle connections are closed, no
// goroutine runs this package's code or holds one of its connections. Not parallel, so that
// no other test's Client runs meanwhile.
func TestRun_LeavesNoGoroutines(t *testing.T) {
	e := newEnv(t)
	d := e.NewDevice(true, "DW100/Production")
	cfg, _ := e.config(t, d)
	before := countStacks("net/http.(*persistConn).readLoop")
	c := newClient(t, cfg)
	attempted := attestation.Attempted(c)
	stop := startRun(t, c)
	waitAttempt(t, attempted, "Run did not attest at start")
	if _, err := c.API().GetDeviceSelf(t.Context()); err != nil {
		t.Fatal(err)
	}
	stop()
	c.HTTPClient().CloseIdleConnections()

	deadline := time.Now().Add(2 * time.Second)
	for {
		ours, conns := countStacks("moat/internal/agent/attestation.("), countStacks("net/http.(*persistConn).readLoop")
		if ours == 0 && conns <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines in package attestation, %d client connections (%d before):\n%s",
				ours, conns, before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // goroutines of closed connections exit asynchronously
	}
}

// countStacks counts the goroutines whose stack mentions fn.
func countStacks(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			count++
		}
	}
	return count
}
