package fleet_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/device"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
)

// The tests of the device cache (devcache.go, issue 15): authentication serves a device's
// row as read for its earlier request only while no change to the device, its tenant or
// every tenant has been heard of. Each test first shows the cached row in play, then makes
// one change and asserts that the device's very next request is refused.

// inPlay asserts that the device's requests are served from its cached row: a block
// written to the store alone (no event, as another replica's write before its NOTIFY
// arrives) is not seen yet. The entry must be younger than fleet.DeviceCacheMaxAge, so a
// machine that stalled past most of it proves nothing either way and is only logged.
func inPlay(t *testing.T, f *fleet, h *holder, warmed time.Time) {
	t.Helper()
	writeDevice(t, f.Server.Store(), h.d.ID, func(x *device.Device) { x.Blocked = true })
	_, err := h.check(t)
	if since := time.Since(warmed); since > fleetsvc.DeviceCacheMaxAge*3/4 {
		t.Logf("the machine stalled %s: the cache may have expired, not asserted", since)
		return
	}
	if err != nil {
		t.Fatalf("a block written behind the replica's back was seen at once (%v): the device cache is not in play, the test proves nothing", err)
	}
	writeDevice(t, f.Server.Store(), h.d.ID, func(x *device.Device) { x.Blocked = false })
}

// TestDeviceCache_BlockThroughTheAPIStopsACachedDeviceAtOnce: a device whose row is
// cached is blocked through the management API; its next request is refused (DESIGN rule
// 3: the block takes effect at once), not served from the cache.
func TestDeviceCache_BlockThroughTheAPIStopsACachedDeviceAtOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	h := hold(t, f, f.NewDevice(true, "DW100/Production"))
	warmed := time.Now()
	h.unchanged(t, "before blocking")
	inPlay(t, f, h, warmed)
	h.unchanged(t, "before blocking, the control undone")
	f.Update(h.d.ID, client.DeviceUpdate{Blocked: ptr(true)})
	if _, err := h.check(t); !isStatus(err, http.StatusUnauthorized) {
		t.Fatalf("check of a device blocked through the API = %v, want 401 at once", err)
	}
}

// TestDeviceCache_RefusedAttestationEndsACachedCertificateAtOnce: a device whose row is
// cached attests again and is refused (it measures an image nobody published); the
// refusal ends its certificate, with no change to its tenant, so only the device's own
// change event (attest.go) ends the cached row: its next request is refused at once.
func TestDeviceCache_RefusedAttestationEndsACachedCertificateAtOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	h := hold(t, f, f.NewDevice(true, "DW100/Production"))
	warmed := time.Now()
	h.unchanged(t, "before the attestation")
	inPlay(t, f, h, warmed)
	unknown := f.app.Measurement()
	unknown.SHA256 = strings.Repeat("0", 64)
	if _, err := f.Attest(h.d, f.os.Measurement(), unknown); err == nil {
		t.Fatal("attestation with an unpublished app accepted")
	}
	if _, err := h.check(t); !isStatus(err, http.StatusUnauthorized) {
		t.Fatalf("check with the certificate a refused attestation ended = %v, want 401 at once", err)
	}
}

// TestAssignmentCache_KeptAcrossAnAttestationThatChangesNothing: a device that attests
// again with the same images (a reconnect storm: every certificate renewed at once) is
// still answered 304 with its new certificate: the attestation ends its cached row, not
// its cached assignment, which the fresh row finds unchanged. Signing every device anew
// there sent each into a verification of its assignment against TUF again.
func TestAssignmentCache_KeptAcrossAnAttestationThatChangesNothing(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	h := hold(t, f, f.NewDevice(true, "DW100/Production"))
	h.unchanged(t, "before the attestation")
	cert, err := f.Attest(h.d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	renewed := &holder{f: f, d: h.d, dc: f.DeviceClient(cert), held: h.held, a: h.a}
	renewed.unchanged(t, "after an attestation with the same images")
}
