package fleet_test

import (
	"context"
	"net/http/httptrace"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	fl "github.com/moat-iot/moat/internal/fleet"
)

// connGoroutines counts the goroutines of net/http's server connections in this process:
// one per connection a server serves (a request in progress or an idle keep-alive).
func connGoroutines() int {
	buf := make([]byte, 1<<24)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "net/http.(*conn).serve(")
}

// TestParkedWait_HoldsNoConnectionGoroutine (issue 15, memory per waiting device): a
// device waiting for updates is parked (internal/api/httpapi/park.go): its connection's
// goroutine and net/http's background reader are gone while it waits, and its wait still
// answers a change on the connection it came on, which then serves the device's next
// request without a new handshake.
//
// Not parallel: it counts every server connection's goroutine in the process, and the
// parallel tests' servers would come and go while it counts.
func TestParkedWait_HoldsNoConnectionGoroutine(t *testing.T) {
	f := newFleet(t)
	ctx := t.Context()
	const n = 20
	type dev struct {
		dc  *client.Client
		gen string
	}
	devs := make([]dev, n)
	for i := range devs {
		d := f.NewDevice(true, "DW100/Production")
		cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
		if err != nil {
			t.Fatal(err)
		}
		dc := f.DeviceClient(cert)
		u, err := dc.WaitForUpdates(ctx, client.UpdatesWait{})
		if err != nil {
			t.Fatal(err)
		}
		devs[i] = dev{dc, u.Generation}
	}
	time.Sleep(50 * time.Millisecond)
	before := connGoroutines()

	type answer struct {
		u      client.Updates
		err    error
		reused bool
	}
	answers := make(chan answer, n)
	for _, d := range devs {
		go func() {
			var a answer
			trace := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { a.reused = i.Reused }})
			a.u, a.err = d.dc.WaitForUpdates(trace, client.UpdatesWait{Since: d.gen})
			answers <- a
		}()
	}
	svc := f.Server.Fleet()
	for deadline := time.Now().Add(wakeWithin); fl.Waiters(svc) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d devices waiting after %s", fl.Waiters(svc), n, wakeWithin)
		}
	}
	time.Sleep(100 * time.Millisecond) // the hijacked connections' goroutines return
	// Each device's connection had its goroutine, idle, before it waited; parked, it has none.
	if during := connGoroutines(); during > before-n+2 {
		t.Errorf("%d devices waiting: %d server connection goroutines, %d before; want %d fewer (they are parked)", n, during, before, n)
	}

	f.PublishApp("dw100-app", "2.0.0", 2, "DW100") // every waiting device's inputs change
	for range n {
		a := <-answers
		if a.err != nil || !a.u.Changed || !a.reused {
			t.Fatalf("a parked wait after a change: %+v, %v, reused connection %v; want changed, on its connection", a.u, a.err, a.reused)
		}
	}
	// The answered connections serve the devices' next requests.
	for _, d := range devs {
		var reused bool
		trace := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		if _, err := d.dc.GetDeviceSelf(trace); err != nil || !reused {
			t.Fatalf("the request after a parked answer: %v, reused connection %v", err, reused)
		}
	}
	// The devices wait again, parked, when the server shuts down (the test's cleanup): Serve
	// answers them and returns cleanly, which the cleanup checks.
	for _, d := range devs {
		u, err := d.dc.WaitForUpdates(ctx, client.UpdatesWait{})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, err := d.dc.WaitForUpdates(context.Background(), client.UpdatesWait{Since: u.Generation})
			answers <- answer{err: err}
		}()
	}
	for deadline := time.Now().Add(wakeWithin); fl.Waiters(svc) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d devices waiting again after %s", fl.Waiters(svc), n, wakeWithin)
		}
	}
}

// TestParkedWait_ResumedConnectionKeepsItsStart attacks the hand-back of a parked
// connection: a device's connection opened before it renewed its certificate still carries
// the old one, which authenticates within SupersedeGrace of the renewal when the
// connection is older than the renewal (authn.go). If the server that takes the connection
// back after a parked answer recorded a new start, the device's own connection would look
// like a clone's past the grace: refused, and an identity conflict raised.
func TestParkedWait_ResumedConnectionKeepsItsStart(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	old, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	dc := f.DeviceClient(old)
	first, err := dc.WaitForUpdates(ctx, client.UpdatesWait{}) // the connection opens now
	if err != nil {
		t.Fatal(err)
	}
	w := f.wait(t, dc, first.Generation)
	// The device renews on another connection; the same images change nothing it waits on.
	if _, err := f.Attest(d, f.os.Measurement(), f.app.Measurement()); err != nil {
		t.Fatal(err)
	}
	f.offset.Add(int64(fl.SupersedeGrace + 5*time.Second))
	f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	w.changed(t, "a new app", first.Generation)

	var reused bool
	trace := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	if _, err := dc.GetDeviceSelf(trace); err != nil {
		t.Fatalf("the device's old connection, opened before its renewal, after a parked answer: %v; want it served", err)
	}
	if !reused {
		t.Fatal("the request did not reuse the parked connection; the test proves nothing")
	}
	// A new connection with the superseded certificate, past the grace, is a clone's.
	if _, err := f.DeviceClient(old).GetDeviceSelf(context.Background()); err == nil {
		t.Fatal("a new connection with the superseded certificate past the grace was served")
	}
}
