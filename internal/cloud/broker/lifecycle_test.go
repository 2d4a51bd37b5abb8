package broker_test

import (
	"runtime"
	"testing"
	"time"
)

// Close leaves no goroutine of the broker behind (a long-running moat cloud that
// reopens its broker must not leak).
func TestBroker_CloseLeavesNoGoroutines(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	cfg := config(t)
	before := runtime.NumGoroutine()
	for range 2 {
		b := open(t, cfg)
		nc, err := b.Conn()
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
