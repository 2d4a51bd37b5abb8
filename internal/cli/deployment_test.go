package cli

import (
	"strings"
	"testing"

	"github.com/moat-iot/moat/client"
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
