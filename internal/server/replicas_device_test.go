package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/testenv"
)

// deviceBound bounds how long a change to a device made through one replica may take to
// stop it on the other: under fleet.DeviceCacheMaxAge, so that only the NOTIFY path
// (replicas.go: the tenant's wake, the device's event) answers in time, never the age.
const deviceBound = fleet.DeviceCacheMaxAge / 2

// TestReplicas_DeviceChangesStopTheDeviceOnEveryReplica: replica B authenticates a device
// from the row it read for the device's earlier request (internal/fleet devcache.go).
//   - The device is blocked through replica A: B refuses it (401) within deviceBound
//     (DESIGN rule 3; the tenant's change event, KindWake).
//   - Another device attests through A and is refused (it measures an image nobody
//     published), which ends its certificate and changes nothing else of the tenant: B
//     refuses the certificate within deviceBound (the device's own event, kindDevice).
//
// With either event ignored by B, B would serve the device until the entry's age ends it.
func TestReplicas_DeviceChangesStopTheDeviceOnEveryReplica(t *testing.T) {
	t.Parallel()
	rp := StartReplicaPair(t)
	p, ctx := rp.P, t.Context()
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	onB := func(name string) (testenv.Device, *client.Client) {
		d := p.NewDevice(true, "DW100/Production")
		cert, err := p.Attest(d, osImg.Measurement(), app.Measurement())
		if err != nil {
			t.Fatalf("%s: attest through A: %v", name, err)
		}
		c := rp.DeviceClientOn(t, rp.B, cert)
		if _, err := c.GetAssignment(ctx); err != nil { // B reads and keeps its row
			t.Fatalf("%s: assignment on B: %v", name, err)
		}
		return d, c
	}
	check := func(c *client.Client) func() error {
		return func() error { _, err := c.GetAssignment(ctx); return err }
	}

	blocked, c := onB("blocked")
	p.Update(blocked.ID, client.DeviceUpdate{Blocked: new(true)})
	at := time.Now()
	if took := waitForStatus(t, deviceBound, http.StatusUnauthorized, check(c)); took >= 0 {
		t.Logf("device blocked through A refused on B %s after the block", took.Round(time.Millisecond))
	} else {
		t.Fatalf("the device blocked through A was still served by B %s later", time.Since(at).Round(time.Millisecond))
	}

	refused, c := onB("refused")
	unknown := app.Measurement()
	unknown.SHA256 = strings.Repeat("0", 64)
	if _, err := p.Anon().Attest(ctx, p.Evidence(refused, false, osImg.Measurement(), unknown)); err == nil {
		t.Fatal("attestation with an unpublished app accepted")
	}
	at = time.Now()
	if took := waitForStatus(t, deviceBound, http.StatusUnauthorized, check(c)); took >= 0 {
		t.Logf("certificate ended by a refused attestation through A refused on B %s after it", took.Round(time.Millisecond))
	} else {
		t.Fatalf("the certificate a refused attestation through A ended was still served by B %s later", time.Since(at).Round(time.Millisecond))
	}
}
