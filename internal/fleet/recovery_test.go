package fleet_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/moat-iot/moat/client"
)

// TestRecovery_EndsOnSuccessfulAttestation attacks a recovery grant kept after its purpose
// (issue 10, defect 8): once the device attests successfully again, the grant it was given
// with its refusal opens nothing, though its hour has not passed. Each use of a grant is
// logged with the device and the route.
func TestRecovery_EndsOnSuccessfulAttestation(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	f.deploy("Production", v2.Path)
	d := f.NewDevice(true, "DW100/Production")
	if _, err := f.Attest(d, f.os.Measurement(), v2.Measurement()); err != nil {
		t.Fatal(err)
	}
	_, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Recovery == nil {
		t.Fatalf("attest below the floor: %v, want a refusal with a recovery grant", err)
	}
	if ce.Recovery.TenantID != f.Tenant {
		t.Errorf("recovery grant names tenant %q, want %q (the device learns its tenant from it)", ce.Recovery.TenantID, f.Tenant)
	}
	rc := f.Client(ce.Recovery.Token)
	if _, err := rc.GetAssignment(ctx); err != nil {
		t.Fatalf("assignment with the recovery grant: %v", err)
	}
	if logs := f.Server.Logs.String(); !usedGrantLogged(logs, d.ID, "/api/v1/device/assignment") {
		t.Errorf("no Info log of the grant's use naming device %s and the route", d.ID)
	}
	// The device installed v2 and attests again: the grant has done its work.
	if _, err := f.Attest(d, f.os.Measurement(), v2.Measurement()); err != nil {
		t.Fatal(err)
	}
	_, err = rc.GetAssignment(ctx)
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Errorf("the grant after a successful attestation: %v, want 401", err)
	}
}

// usedGrantLogged reports whether the JSON logs hold an Info line of a recovery grant's use
// by the device on the route.
func usedGrantLogged(logs, deviceID, route string) bool {
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, `"level":"INFO"`) && strings.Contains(line, "recovery grant used") &&
			strings.Contains(line, `"device_id":"`+deviceID+`"`) && strings.Contains(line, route) {
			return true
		}
	}
	return false
}
