package fleet

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/product"
)

// WindowHorizon is how far ahead an assignment lists its group's maintenance windows: a
// week and a day, so that a device that loses its connection still knows its next window
// (a weekly window recurs within it). Assignments last AssignmentTTL; the device fetches a
// new one long before the horizon runs out.
const WindowHorizon = 8 * 24 * time.Hour

// installPolicy fills what decides when the device installs (issue 12): the install
// windows of its group's maintenance window over [now, now+WindowHorizon], the product's
// deferral bound, and IgnoreWindow on the app image of the group's current deployment
// when that deployment ignores the window (a security update). It decides only when, never
// what: the images are chosen before it runs.
func (in *inputs) installPolicy(a *director.Assignment, now time.Time) {
	if !in.grouped {
		return
	}
	a.InstallWindows = installWindows(in.group.MaintenanceWindow, now)
	a.MaxDeferralSeconds = in.product.MaxUpdateDeferralSeconds
	if dep := in.dep; dep != nil && dep.IgnoreWindow {
		for i := range a.Images {
			if a.Images[i].Kind == director.KindApp && a.Images[i].Path == dep.Target {
				a.Images[i].IgnoreWindow = true
			}
		}
	}
}

// installWindows is w's intervals over [now, now+WindowHorizon] as the director signs
// them: nil without a window. At most director.MaxWindows (a window every day for 8 days
// is 9; merged ones are fewer).
func installWindows(w *product.MaintenanceWindow, now time.Time) []director.Window {
	if w == nil {
		return nil
	}
	ivs := w.Intervals(now, now.Add(WindowHorizon))
	out := make([]director.Window, 0, len(ivs))
	for _, iv := range ivs {
		if len(out) == director.MaxWindows {
			break
		}
		out = append(out, director.Window{From: iv.From.Truncate(time.Second), Until: iv.Until.Truncate(time.Second)})
	}
	if len(out) == 0 {
		// A valid window recurs every week, so this does not happen; were it to, "no
		// windows" would mean "any time": fail closed with a window that is already over.
		from := now.Add(-2 * time.Second).Truncate(time.Second)
		out = append(out, director.Window{From: from, Until: from.Add(time.Second)})
	}
	return out
}

// writeInstallPolicy adds the group's maintenance window and the product's deferral bound
// to a device's update generation (updates.go), so a waiting device learns of a change at
// once.
func writeInstallPolicy(h io.Writer, g product.Group, p product.Product) error {
	w, err := json.Marshal(g.MaintenanceWindow)
	if err != nil {
		return err
	}
	fmt.Fprintf(h, "install %s %d\n", w, p.MaxUpdateDeferralSeconds)
	return nil
}
