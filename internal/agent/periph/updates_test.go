package periph

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeUpdates is an UpdateControl that records what the app asked.
type fakeUpdates struct {
	mu     sync.Mutex
	defers []time.Duration
	allows int
	fail   bool
}

func (u *fakeUpdates) DeferUpdates(d time.Duration) (time.Time, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.fail {
		return time.Time{}, errors.New("state directory full")
	}
	u.defers = append(u.defers, d)
	return testNow.Add(d), nil
}

func (u *fakeUpdates) AllowUpdates() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.allows++
	return nil
}

// TestServer_UpdateDeferral: update.defer hands the runtime the asked duration and answers
// until when; update.allow ends it; out-of-range durations never reach the runtime; a
// runtime without deferral answers unsupported; a runtime that cannot record it answers
// unavailable.
func TestServer_UpdateDeferral(t *testing.T) {
	t.Parallel()
	u := &fakeUpdates{}
	f := startServer(t, NewSimulated(), func(c *Config) { c.Updates, c.Capabilities.SoftwareUpdateDeferral = u, true })
	c := f.dial(t)
	if r := c.send(`{"id":1,"op":"update.defer","seconds":3600}`); !r.OK || r.Until != "2026-11-25T11:00:00Z" {
		t.Errorf("update.defer 3600 = %+v, want ok until 2026-11-25T11:00:00Z", r)
	}
	for _, line := range []string{
		`{"id":2,"op":"update.defer","seconds":604801}`,
		`{"id":3,"op":"update.defer","seconds":0}`,
		`{"id":4,"op":"update.defer","seconds":-1}`,
	} {
		if r := c.send(line); r.code() != CodeBadRequest {
			t.Errorf("%s = %+v, want %s", line, r, CodeBadRequest)
		}
	}
	if r := c.send(`{"id":5,"op":"update.allow"}`); !r.OK {
		t.Errorf("update.allow = %+v", r)
	}
	u.mu.Lock()
	if len(u.defers) != 1 || u.defers[0] != time.Hour || u.allows != 1 {
		t.Errorf("runtime saw defers %v and %d allows, want [1h] and 1", u.defers, u.allows)
	}
	u.fail = true
	u.mu.Unlock()
	if r := c.send(`{"id":6,"op":"update.defer","seconds":60}`); r.code() != CodeUnavailable {
		t.Errorf("update.defer with a failing runtime = %+v, want %s", r, CodeUnavailable)
	}

	none := startServer(t, NewSimulated(), func(c *Config) { c.Capabilities.SoftwareUpdateDeferral = true })
	nc := none.dial(t)
	for _, line := range []string{`{"id":1,"op":"update.defer","seconds":60}`, `{"id":2,"op":"update.allow"}`} {
		if r := nc.send(line); r.code() != CodeUnsupported {
			t.Errorf("%s without Config.Updates = %+v, want %s", line, r, CodeUnsupported)
		}
	}
}

// TestServer_RefusesDeferralWithoutCapability: an app whose manifest does not declare
// software_update_deferral cannot hold updates back (DESIGN rule 6: it uses only what its
// manifest declares); the refusal is reported once, and allowing updates needs nothing.
func TestServer_RefusesDeferralWithoutCapability(t *testing.T) {
	t.Parallel()
	u := &fakeUpdates{}
	f := startServer(t, NewSimulated(), func(c *Config) { c.Updates = u })
	c := f.dial(t)
	if r := c.send(`{"id":1,"op":"update.defer","seconds":3600}`); r.code() != CodeCapabilityDenied {
		t.Errorf("update.defer without the capability = %+v, want %s", r, CodeCapabilityDenied)
	}
	if r := c.send(`{"id":2,"op":"update.allow"}`); !r.OK {
		t.Errorf("update.allow without the capability = %+v, want ok", r)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.defers) != 0 {
		t.Errorf("runtime saw defers %v, want none", u.defers)
	}
	if got := f.rec.Denials(); len(got) != 1 || got[0] != "software_update_deferral" {
		t.Errorf("denials reported = %v, want [software_update_deferral]", got)
	}
}
