package cli

import (
	"strings"
	"testing"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestDeployment_ShowAndRollback: 'deployment rollback' deploys the previous image again and
// says what it reverted, 'deployment show' shows it with the deployment it reverts, and a
// group with nothing before its current deployment is a conflict.
func TestDeployment_ShowAndRollback(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	app2 := p.PublishApp("dw100-app", "1.1.0", 1, "DW100")
	u := newUser(t)
	u.login(p.Server, p.Server.OperatorToken)
	u.must("tenant", "select", "Contoso")
	const group = "DW100/Production"
	first := mustJSON[client.Deployment](u, "deployment", "create", "--device-group", group, "--image", app.Path)
	u.want(ExitConflict, "deployment", "rollback", "--device-group", group)
	second := mustJSON[client.Deployment](u, "deployment", "create", "--device-group", group, "--image", app2.Path)

	out := u.must("deployment", "rollback", "--device-group", group)
	deps := mustJSON[[]client.Deployment](u, "deployment", "list", "--device-group", group)
	if len(deps) != 3 || deps[2].ID != first.ID || deps[0].Target != app.Path || deps[0].Reverts != second.ID {
		t.Fatalf("deployment list after rollback = %+v, want %s reverting %s first", deps, app.Path, second.ID)
	}
	back := deps[0]
	for _, want := range []string{"reverts " + second.ID, app.Path, back.ID} {
		if !strings.Contains(out, want) {
			t.Errorf("deployment rollback output lacks %q:\n%s", want, out)
		}
	}
	if got := mustJSON[client.Deployment](u, "deployment", "show", back.ID, "--device-group", group); got != back {
		t.Errorf("deployment show -o json = %+v, want %+v", got, back)
	}
	out = u.must("deployment", "show", back.ID, "--device-group", group)
	if !strings.Contains(out, "Reverts:") || !strings.Contains(out, second.ID) {
		t.Errorf("deployment show lacks the reverted deployment:\n%s", out)
	}
	again := mustJSON[client.Deployment](u, "deployment", "rollback", "--device-group", group, "--to", second.ID)
	if again.Target != app2.Path || again.Reverts != back.ID {
		t.Errorf("deployment rollback --to %s = %+v, want %s reverting %s", second.ID, again, app2.Path, back.ID)
	}
	u.want(ExitConflict, "deployment", "rollback", "--device-group", group, "--to", again.ID)
	u.want(ExitNotFound, "deployment", "show", "dep_nope", "--device-group", group)
	u.want(ExitUsage, "deployment", "show", "--device-group", group)
}

// TestDeployment_StagedRollout: 'deployment create --stages' sends the stages, soak and
// gate as given (the minimum data defaulting to the server's defaults), 'status' prints a
// row per stage and the gate's figures beside their thresholds, and 'pause', 'resume',
// 'promote' (with --force and --reason, audited as deployment.promote_forced) and 'abort'
// change the rollout, a change its state forbids exiting 7. Malformed rollout flags are
// usage errors before any request; out-of-range ones and --ignore-window without a
// security bump are the server's refusals (exit 3).
func TestDeployment_StagedRollout(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	app2 := p.PublishApp("dw100-app", "1.2.0", 1, "DW100")
	u := newUser(t)
	u.login(p.Server, p.Server.OperatorToken)
	u.must("tenant", "select", "Contoso")
	const group = "DW100/Production"
	base := mustJSON[client.Deployment](u, "deployment", "create", "--device-group", group, "--image", app.Path)

	for _, args := range [][]string{
		{"--soak", "1h"},                              // rollout flags without --stages
		{"--min-crash-free", "99"},                    // likewise
		{"--stages", "1,ten,100", "--soak", "1h"},     // not a number
		{"--stages", "1,10,100"},                      // no soak
		{"--stages", "1,10,100", "--soak", "an hour"}, // not a duration
		{"--stages", "1,100", "--soak", "1h", "--max-crash-rate", "x"},
	} {
		u.want(ExitUsage, append([]string{"deployment", "create", "--device-group", group, "--image", app2.Path}, args...)...)
	}
	for _, args := range [][]string{
		{"--stages", "10,1,100", "--soak", "1h"},
		{"--stages", "1,10,50", "--soak", "1h"},
		{"--stages", "1,100", "--soak", "-1h"},
		{"--stages", "1,100", "--soak", "1h", "--min-crash-free", "101"},
		{"--ignore-window"}, // 1.2.0 has 1.0.0's security version: no new floor
	} {
		u.want(ExitInvalid, append([]string{"deployment", "create", "--device-group", group, "--image", app2.Path}, args...)...)
	}
	if deps := mustJSON[[]client.Deployment](u, "deployment", "list", "--device-group", group); len(deps) != 1 {
		t.Fatalf("refused creates made deployments: %+v", deps)
	}

	d := mustJSON[client.Deployment](u, "deployment", "create", "--device-group", group, "--image", app2.Path,
		"--stages", "1%,10%,50%,100%", "--soak", "1h", "--max-crash-rate", "0.5", "--min-crash-free", "99", "--max-failed-installs", "5", "--auto-rollback")
	r := d.Rollout
	if r == nil || fmtStages(r.Stages) != "1%, 10%, 50%, 100%" || r.SoakSeconds != 3600 || !r.AutoRollback || r.State != client.RolloutRunning ||
		r.Gate.MaxCrashRate == nil || *r.Gate.MaxCrashRate != 0.5 || r.Gate.MinCrashFree == nil || *r.Gate.MinCrashFree != 99 ||
		r.Gate.MaxFailedInstalls == nil || *r.Gate.MaxFailedInstalls != 5 || r.Gate.MinDeviceHours != defaultMinDeviceHours ||
		r.Gate.MinInstalls != defaultMinInstalls || r.BaseTarget != base.Target {
		t.Fatalf("created rollout = %+v, want the flags' stages, soak and gate over base %s", r, base.Target)
	}
	at := []string{d.ID, "--device-group", group}
	out := u.must(append([]string{"deployment", "show"}, at...)...)
	for _, want := range []string{"Rollout:", "running, stage 1 of 4 (1%)", "crash-free >= 99%", "judged from 24 device-hours, 10 installs", "Others run:", base.Target} {
		if !strings.Contains(out, want) {
			t.Errorf("deployment show lacks %q:\n%s", want, out)
		}
	}

	out = u.must(append([]string{"deployment", "status"}, at...)...)
	for _, want := range []string{"STAGE", "PERCENT", "OPEN", "TARGETED", "ON NEW", "FAILED", "CRASHING", "50%",
		"GATE", "crash-free devices", "at least 99%", "at most 0.5/device-hour", "at most 5%", "Verdict:", "soaking"} {
		if !strings.Contains(out, want) {
			t.Errorf("deployment status lacks %q:\n%s", want, out)
		}
	}
	st := mustJSON[client.RolloutStatus](u, append([]string{"deployment", "status"}, at...)...)
	if len(st.Stages) != 4 || !st.Stages[0].Open || st.Stages[1].Open || st.Verdict != "soaking" || st.Deployment.ID != d.ID {
		t.Errorf("deployment status -o json = %+v, want 4 stages, the first open, soaking", st)
	}

	if out := u.must(append([]string{"deployment", "pause", "--reason", "a look"}, at...)...); !strings.Contains(out, "Paused "+d.ID+": paused, stage 1 of 4") {
		t.Errorf("deployment pause says:\n%s", out)
	}
	u.want(ExitConflict, append([]string{"deployment", "pause"}, at...)...)
	u.must(append([]string{"deployment", "resume"}, at...)...)
	if got := mustJSON[client.Deployment](u, append([]string{"deployment", "promote"}, at...)...); got.Rollout.Stage != 1 {
		t.Errorf("promote: stage %d, want 2", got.Rollout.Stage+1)
	}
	if out := u.must(append([]string{"deployment", "promote", "--force", "--reason", "hotfix window"}, at...)...); !strings.Contains(out, "Promoted "+d.ID+": running, stage 3 of 4 (50%)") {
		t.Errorf("deployment promote --force says:\n%s", out)
	}
	u.must(append([]string{"deployment", "abort"}, at...)...)
	u.want(ExitConflict, append([]string{"deployment", "resume"}, at...)...)
	u.want(ExitNotFound, "deployment", "status", base.ID, "--device-group", group)
	u.want(ExitUsage, "deployment", "pause", "--device-group", group)

	evs, err := p.Admin.ListAuditEvents(t.Context(), p.Tenant, client.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var forced []client.AuditEvent
	for _, e := range evs.Items {
		if e.Action == "deployment.promote_forced" {
			forced = append(forced, e)
		}
	}
	if len(forced) != 1 || !strings.Contains(forced[0].Detail, "hotfix window") || forced[0].ObjectID != d.ID {
		t.Errorf("forced promote audit events = %+v, want one naming the deployment and the reason", forced)
	}
}

// TestDeployment_GateDefaults holds the CLI's defaults of the gate's minimum data to the
// server's.
func TestDeployment_GateDefaults(t *testing.T) {
	t.Parallel()
	if defaultMinDeviceHours != device.DefaultMinDeviceHours || defaultMinInstalls != device.DefaultMinInstalls {
		t.Errorf("CLI gate defaults %v device-hours, %d installs; want the server's %v and %d",
			defaultMinDeviceHours, defaultMinInstalls, device.DefaultMinDeviceHours, device.DefaultMinInstalls)
	}
}
