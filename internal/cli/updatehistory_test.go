package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestDevice_UpdateHistory: a device reports the steps of an update; support staff see
// them newest first, and the latest state and last contact in 'moat device show'.
func TestDevice_UpdateHistory(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := testenv.NewPlatform(t)
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	d := p.NewDevice(true, "DW100/Production")
	cert, err := p.Attest(d, osImg.Measurement(), app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	until := at.Add(time.Hour)
	target := "apps/dw100-app/2.0.0"
	state := func(i int, s string) client.UpdateState {
		a := at.Add(time.Duration(i) * time.Second)
		return client.UpdateState{ID: errreport.NewID(a), At: a, State: s, Kind: "app", Target: target, Version: "2.0.0"}
	}
	dl := state(1, client.UpdateDownloading)
	dl.BytesDone, dl.BytesTotal = 512, 2048
	rb := state(3, client.UpdateRolledBack)
	rb.Code, rb.Message = "health_check_failed", "apps/dw100-app/2.0.0 never became healthy\nin 3 tries"
	def := state(4, client.UpdateDeferred)
	def.DeferredUntil = &until
	states := []client.UpdateState{state(0, client.UpdateAssigned), dl, state(2, client.UpdateInstalled), rb, def}
	if _, err := p.DeviceClient(cert).CreateUpdateStates(ctx, client.UpdateStateBatch{Reports: states}); err != nil {
		t.Fatalf("CreateUpdateStates = %v", err)
	}
	m, err := p.Admin.CreateMember(ctx, p.Tenant, client.MemberCreate{Name: "support", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	u := newUser(t)
	u.login(p.Server, m.Secret)
	u.must("tenant", "select", "Contoso")

	out := u.must("device", "update-history", d.ID)
	want := [][]string{
		{"TIME", "STATE", "TARGET", "DETAIL"},
		{"2025-06-07T08:09:14Z", "deferred", target, "until 2025-06-07T09:09:10Z"},
		{"2025-06-07T08:09:13Z", "rolled_back", target, "health_check_failed: apps/dw100-app/2.0.0 never became healthy"},
		{"2025-06-07T08:09:12Z", "installed", target, "-"},
		{"2025-06-07T08:09:11Z", "downloading", target, "512 of 2048 bytes (25%)"},
		{"2025-06-07T08:09:10Z", "assigned", target, "-"},
	}
	var got [][]string
	for l := range strings.Lines(strings.TrimSpace(out)) {
		got = append(got, strings.SplitN(strings.Join(strings.Fields(l), " "), " ", 4))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("moat device update-history (-want +got):\n%s\n%s", d, out)
	}
	recs := mustJSON[[]client.UpdateStateRecord](u, "device", "update-history", d.ID)
	if len(recs) != 5 || recs[1].Report.Message != rb.Message || recs[0].DeviceID != d.ID {
		t.Errorf("-o json = %+v, want the five API objects, newest first", recs)
	}
	r := u.run("device", "update-history", d.ID, "--limit", "2")
	if r.code != 0 || !strings.Contains(r.stderr, "newest 2") {
		t.Errorf("--limit 2: exit %d, stderr %q; want 0 and a note that there are more", r.code, r.stderr)
	}
	u.want(ExitUsage, "device", "update-history", d.ID, "--limit", "201")
	u.want(ExitUsage, "device", "update-history", "not-a-device")
	u.want(ExitNotFound, "device", "update-history", strings.Repeat("0", 64))

	show := u.must("device", "show", d.ID)
	for _, line := range []string{"Update state", "deferred at 2025-06-07T08:09:14Z", "Last seen", "(to within 5 minutes)"} {
		if !strings.Contains(show, line) {
			t.Errorf("moat device show lacks %q:\n%s", line, show)
		}
	}
}
