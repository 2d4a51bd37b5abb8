package push

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/tenant"
)

// TestNotifyAll_WakesEveryTenant: after a lost LISTEN connection the replica wakes every
// waiter of every tenant (changes may have been missed), long before the periodic
// re-check, and spreads their re-checks over at most maxWakeSpread.
func TestNotifyAll_WakesEveryTenant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, err := New(100, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		store := &countingStore{}
		var devices []device.Device
		for i := range 30 {
			devices = append(devices, device.Device{ID: device.ID(fmt.Sprintf("%064x", i)), TenantID: tenant.ID(fmt.Sprintf("tnt_%d", i%3))})
		}
		done := make(chan waitResult, len(devices))
		for _, d := range devices {
			go func() {
				u, err := w.Wait(context.Background(), d, "gen-1", store.generation)
				done <- waitResult{u, err}
			}()
		}
		synctest.Wait()
		start, before := time.Now(), store.readCount()
		w.NotifyAll()
		time.Sleep(maxWakeSpread + time.Millisecond)
		synctest.Wait()
		reads := store.readsFrom(before)
		if len(reads) != len(devices) {
			t.Fatalf("re-checks within %s of NotifyAll = %d, want %d (every waiter of every tenant)", maxWakeSpread, len(reads), len(devices))
		}
		for _, r := range reads {
			if d := r.Sub(start); d > maxWakeSpread {
				t.Errorf("a re-check came %s after NotifyAll, want at most %s", d, maxWakeSpread)
			}
		}
		if w.Armed("tnt_0") != true {
			t.Error("after their re-check the waiters wait again for the next wake-up")
		}
		w.Stop()
		for range devices {
			if r := <-done; r.err != nil {
				t.Errorf("wait: %v", r.err)
			}
		}
	})
}
