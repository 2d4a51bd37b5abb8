package console

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/client"
)

// rolloutView is a group's current staged deployment on its page (issue 12): where it
// stands, its stages with their devices, the gate's figures beside their thresholds and,
// when the gate paused it, why. Everything comes from the API's deployment status, read as
// the session's user (a Reader may read it).
type rolloutView struct {
	Deployment client.Deployment
	State      string
	Verdict    string
	NextStage  string
	Stages     []stageRow
	Gate       []gateRow
	// Trip says which figure paused the rollout, its value and the threshold ("" none).
	Trip string
}

type stageRow struct {
	N int
	client.StageStatus
}

// gateRow is one figure of the gate now beside its threshold; Over marks a figure past it.
type gateRow struct {
	Figure, Now, Threshold string
	Over                   bool
}

// currentRollout reads the status of the group's current deployment when it is staged;
// nil when the group has none or it went to the whole group at once.
func (q *req) currentRollout(g groupRef, current *client.Deployment) (*rolloutView, error) {
	if current == nil || current.Rollout == nil {
		return nil, nil
	}
	st, err := q.api.GetDeploymentStatus(q.ctx, q.tenant.ID, g.Product.ID, g.Group.ID, current.ID)
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
		return nil, nil // replaced or removed since the list was read
	}
	if err != nil {
		return nil, err
	}
	return newRolloutView(st), nil
}

func newRolloutView(st client.RolloutStatus) *rolloutView {
	d := st.Deployment
	r := d.Rollout
	v := &rolloutView{Deployment: d, State: rolloutState(*r), Verdict: strings.ReplaceAll(st.Verdict, "_", " "), NextStage: when(st.NextStageAt)}
	for i, s := range st.Stages {
		v.Stages = append(v.Stages, stageRow{N: i + 1, StageStatus: s})
	}
	f, g := st.Figures, r.Gate
	perHour := func(x float64) string { return num(x) + " per device-hour" }
	pct := func(x float64) string { return num(x) + " %" }
	row := func(name string, now float64, limit *float64, atMost bool, unit func(float64) string) gateRow {
		gr := gateRow{Figure: name, Now: unit(now), Threshold: "not checked"}
		if limit != nil {
			if atMost {
				gr.Threshold, gr.Over = "at most "+unit(*limit), now > *limit
			} else {
				gr.Threshold, gr.Over = "at least "+unit(*limit), now < *limit
			}
		}
		return gr
	}
	v.Gate = []gateRow{
		row("Crash rate", f.CrashRate(), g.MaxCrashRate, true, perHour),
		row("Crash-free devices", f.CrashFreePercent(), g.MinCrashFree, false, pct),
		row("Failed installs", f.FailedInstallPercent(), g.MaxFailedInstalls, true, pct),
		{Figure: "Device-hours on the new version", Now: num(f.DeviceHours), Threshold: "at least " + num(g.MinDeviceHours) + " to judge crashes"},
		{Figure: "Install attempts", Now: strconv.Itoa(f.InstallAttempts), Threshold: "at least " + strconv.Itoa(g.MinInstalls) + " to judge installs"},
	}
	if t := r.Trip; t != nil {
		v.Trip = fmt.Sprintf("%s %s beyond the threshold %s in stage %d, at %s", t.Figure, num(t.Value), num(t.Threshold), t.Stage+1, when(t.At))
	}
	return v
}

// rolloutState says where a rollout stands: "running, stage 2 of 4 (10 %)".
func rolloutState(r client.Rollout) string {
	s := strings.ReplaceAll(r.State, "_", " ")
	if r.Stage >= 0 && r.Stage < len(r.Stages) {
		s += fmt.Sprintf(", stage %d of %d (%s %%)", r.Stage+1, len(r.Stages), num(r.Stages[r.Stage]))
	}
	return s
}

func num(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) }

// soak is a rollout's soak time for people.
func soak(r *client.Rollout) string {
	if r == nil {
		return ""
	}
	return (time.Duration(r.SoakSeconds) * time.Second).String()
}
