package fleet_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/identity"
)

// TestAttest_EvidenceFromUnknownKeyIsAudited is ATTACKS row 3 as moat has it (a device's
// trust chain is its registered identity key): evidence for a claimed device, with a nonce
// the server issued for it, signed by a key that is not the device's (another device's, and
// one nobody registered). No certificate; the device's record is not touched (anybody can
// send evidence naming it), but its tenant's audit log says what happened and why. The
// nonce is spent, so the same evidence sent again adds no event: each issued nonce buys at
// most one.
func TestAttest_EvidenceFromUnknownKeyIsAudited(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	good := []attest.Measurement{f.os.Measurement(), f.app.Measurement()}
	d := f.NewDevice(true, "DW100/Production")
	other := f.NewDevice(true, "DW100/Production")
	stranger, err := identity.CreateFileKey(t.TempDir() + "/k")
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]*identity.FileKey{"another device's key": other.Key, "an unregistered key": stranger} {
		n, err := f.Anon().CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: d.ID})
		if err != nil {
			t.Fatal(err)
		}
		id := string(key.ID())
		ev, err := attest.Sign(key, attest.Evidence{DeviceID: id, Nonce: n.Nonce, Time: time.Now(), Measurements: good})
		if err != nil {
			t.Fatal(err)
		}
		forged := []byte(strings.ReplaceAll(string(ev), id, d.ID))
		before := forgeries(t, f, d.ID)
		f.refusal(t, name, forged, d, "bad_signature", false)
		if got := forgeries(t, f, d.ID); got != before+1 {
			t.Errorf("%s: %d device.attestation_refused events with reason bad_signature, want %d", name, got, before+1)
		}
		f.refusal(t, name+" again", forged, d, "bad_signature", false)
		if got := forgeries(t, f, d.ID); got != before+1 {
			t.Errorf("%s sent again: %d events, want still %d (the nonce is spent)", name, got, before+1)
		}
	}
	if rec := f.record(t, d.ID); rec.Attestation != nil || rec.Certificate != nil {
		t.Errorf("device record after forged evidence: attestation %+v, certificate %+v; want untouched", rec.Attestation, rec.Certificate)
	}
	// The device itself still attests.
	if _, err := f.Attest(d, good...); err != nil {
		t.Fatalf("the genuine device after the forgeries: %v", err)
	}
}

// forgeries counts the tenant's audit events of refused evidence for device id whose
// reason is bad_signature.
func forgeries(t *testing.T, f *fleet, id string) int {
	t.Helper()
	evs, err := f.Admin.ListAuditEvents(context.Background(), f.Tenant, client.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs.Items {
		if e.Action == "device.attestation_refused" && e.ObjectID == id && strings.HasPrefix(e.Detail, "bad_signature:") {
			n++
		}
	}
	return n
}
