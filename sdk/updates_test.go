package sdk_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/sdk"
)

var deferNow = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

type updates struct {
	mu     sync.Mutex
	asked  []time.Duration
	allows int
}

func (u *updates) DeferUpdates(d time.Duration) (time.Time, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.asked = append(u.asked, d)
	return deferNow.Add(d), nil
}

func (u *updates) AllowUpdates() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.allows++
	return nil
}

// TestClient_DeferAndAllowUpdates: DeferUpdates reaches the runtime as whole seconds
// (rounded up) and returns its until; AllowUpdates reaches it; durations out of range are
// refused before anything is sent; a runtime without deferral is ErrUnsupported.
func TestClient_DeferAndAllowUpdates(t *testing.T) {
	t.Parallel()
	u := &updates{}
	rt := startRuntimeWith(t, func(c *periph.Config) { c.Updates, c.Capabilities.SoftwareUpdateDeferral = u, true })
	c := connect(t, rt)
	until, err := c.DeferUpdates(t.Context(), 90*time.Minute+time.Millisecond)
	if want := deferNow.Add(90*time.Minute + time.Second); err != nil || !until.Equal(want) {
		t.Errorf("DeferUpdates(90m1ms) = %v, %v; want %v", until, err, want)
	}
	if err := c.AllowUpdates(t.Context()); err != nil {
		t.Errorf("AllowUpdates() = %v", err)
	}
	for _, d := range []time.Duration{0, -time.Second, sdk.MaxDeferral + time.Second} {
		if _, err := c.DeferUpdates(t.Context(), d); !errors.Is(err, sdk.ErrBadRequest) {
			t.Errorf("DeferUpdates(%v) = %v, want ErrBadRequest", d, err)
		}
	}
	if _, err := c.DeferUpdates(t.Context(), sdk.MaxDeferral); err != nil {
		t.Errorf("DeferUpdates(MaxDeferral) = %v", err)
	}
	u.mu.Lock()
	if len(u.asked) != 2 || u.asked[0] != 90*time.Minute+time.Second || u.asked[1] != sdk.MaxDeferral || u.allows != 1 {
		t.Errorf("runtime saw %v and %d allows; want [1h30m1s 168h] and 1", u.asked, u.allows)
	}
	u.mu.Unlock()

	plain := connect(t, startRuntimeWith(t, func(c *periph.Config) { c.Capabilities.SoftwareUpdateDeferral = true }))
	if _, err := plain.DeferUpdates(t.Context(), time.Hour); !errors.Is(err, sdk.ErrUnsupported) {
		t.Errorf("DeferUpdates on a runtime without deferral = %v, want ErrUnsupported", err)
	}
	// The manifest must declare software_update_deferral (DESIGN rule 6).
	undeclared := connect(t, startRuntimeWith(t, func(c *periph.Config) { c.Updates = u }))
	if _, err := undeclared.DeferUpdates(t.Context(), time.Hour); !errors.Is(err, sdk.ErrCapabilityDenied) {
		t.Errorf("DeferUpdates without the manifest capability = %v, want ErrCapabilityDenied", err)
	}
}
