package fleet_test

import (
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	fleetpkg "github.com/moat-iot/moat/internal/fleet"
)

// TestAuthenticate_LastSeenIsCoarse: attesting sets a device's last contact; calls with its
// certificate move it only once it is SeenEvery old, so an unchanged check-in is not a
// write each time, and the time never goes back.
func TestAuthenticate_LastSeenIsCoarse(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	if got := f.record(t, d.ID).LastSeenAt; got != nil {
		t.Errorf("a device that never called: LastSeenAt = %v, want none", got)
	}
	before := time.Now()
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	attested := f.record(t, d.ID).LastSeenAt
	if attested == nil || attested.Before(before.Add(-time.Second)) || attested.After(time.Now()) {
		t.Fatalf("after attesting: LastSeenAt = %v, want the attestation's time", attested)
	}
	dc := f.DeviceClient(cert)
	check := func(offset time.Duration) *time.Time {
		t.Helper()
		f.offset.Store(int64(offset))
		if _, err := dc.GetAssignment(t.Context()); err != nil {
			t.Fatalf("GetAssignment at +%s: %v", offset, err)
		}
		if _, err := dc.WaitForUpdates(t.Context(), client.UpdatesWait{}); err != nil {
			t.Fatalf("WaitForUpdates at +%s: %v", offset, err)
		}
		return f.record(t, d.ID).LastSeenAt
	}
	if got := check(time.Minute); got == nil || !got.Equal(*attested) {
		t.Errorf("a check-in a minute later: LastSeenAt = %v, want unchanged %v", got, attested)
	}
	if got := check(fleetpkg.SeenEvery - 2*time.Second); got == nil || !got.Equal(*attested) {
		t.Errorf("a check-in just within SeenEvery: LastSeenAt = %v, want unchanged %v", got, attested)
	}
	later := check(fleetpkg.SeenEvery + time.Second)
	if later == nil || !later.After(attested.Add(fleetpkg.SeenEvery)) {
		t.Errorf("a check-in past SeenEvery: LastSeenAt = %v, want after %v", later, attested.Add(fleetpkg.SeenEvery))
	}
	if got := check(0); got == nil || !got.Equal(*later) {
		t.Errorf("a check-in with the clock set back: LastSeenAt = %v, want unchanged %v", got, later)
	}
}
