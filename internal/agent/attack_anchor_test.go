package agent_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/errreport"
)

// TestAgent_CorruptTrustAnchorFailsClosedAndReports is ATTACKS row 23 (Mender's key issue):
// the device's trust anchors are damaged. First the update client's trusted root
// (state/update/tuf/root.json) is corrupted: the next update is refused, nothing is
// installed, and the failure report reaches the server. Then the installed app's signed
// metadata (its slot's bundle.json) is corrupted and the device restarted: the app is not
// run from that slot, and the rejection reaches the server too.
func TestAgent_CorruptTrustAnchorFailsClosedAndReports(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	state := t.TempDir()
	dv := f.start(t, d, state)
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	root := filepath.Join(state, "update", "tuf", "root.json")
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("the update client's trusted root: %v", err)
	}
	if err := os.WriteFile(root, []byte(`{"signed":{"_type":"root","version":99},"signatures":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	v11 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(v11.Path)
	dv.agent.Nudge()
	eventually(t, "the refused update is reported", func() (bool, string) {
		rs := f.reports(t, dv)
		return hasReport(rs, func(r errreport.Report) bool {
			return r.Kind == errreport.UpdateFailed && r.Step == errreport.StepVerify && r.Code == "assignment_refused"
		}), kinds(rs)
	})
	rec, err := boot.ReadRecord(state)
	if err != nil {
		t.Fatal(err)
	}
	if rec.App.Pending != "" || rec.App.Images[rec.App.Active].Path != f.app.Path {
		t.Errorf("app slots after the refused update = %+v, want %s active and nothing pending", rec.App, f.app.Path)
	}
	dv.stop(t)

	// The installed app's metadata is damaged; the device restarts.
	bundle := filepath.Join(state, "slots", "app-"+string(rec.App.Active), "bundle.json")
	if _, err := os.Stat(bundle); err != nil {
		t.Fatalf("the app slot's bundle: %v", err)
	}
	if err := os.WriteFile(bundle, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	dv = f.start(t, d, state)
	eventually(t, "the rejected slot is reported", func() (bool, string) {
		rs := f.reports(t, dv)
		return hasReport(rs, func(r errreport.Report) bool {
			return r.Kind == errreport.UpdateFailed && r.Code == "slot_rejected" && r.Step == errreport.StepBoot && r.Target == f.app.Path
		}), kinds(rs)
	})
	if a := f.record(t, d.ID).Attestation; a != nil && a.Refusal == "" {
		for _, im := range a.Images {
			if im.Path == f.app.Path {
				t.Errorf("the device attested running %s from the slot whose metadata is damaged", im.Path)
			}
		}
	}
}
