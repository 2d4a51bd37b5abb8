package cli

import (
	"context"
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newDeploymentCmd(env *Env) *ffcli.Command {
	return newNoun(env, "deployment", "Deploy application images to device groups.",
		`A deployment puts one published application image (apps/NAME/VERSION, as 'moat image
list' shows it) on every device of a device group, until a newer deployment of the group
replaces it. Devices install it only because both the server assigns it and the tenant's
offline key signed it. Every deployment is kept: 'list' shows a group's history, and
'rollback' deploys an earlier one's image again as a new deployment that says which one it
reverts. A group is named PRODUCT/GROUP, or GROUP with --product PRODUCT.

A staged deployment ('create --stages') goes to a growing share of the group: each stage
runs for its soak time, then opens the next one if the health gate holds for the devices
already on the new image; past a threshold the rollout pauses itself and says why.
'status' shows it stage by stage; 'pause', 'resume', 'abort' and 'promote' change it.

EXAMPLES
  moat deployment create --device-group DW100/Production --image apps/dw100-app/1.0.0
  moat deployment create --device-group DW100/Production --image apps/dw100-app/1.2.0 --stages 1,10,50,100 --soak 1h --min-crash-free 99
  moat deployment status dep_0193... --device-group DW100/Production
  moat deployment list --device-group DW100/Production
  moat deployment rollback --device-group DW100/Production`,
		newDeploymentCreate(env), newDeploymentList(env), newDeploymentShow(env), newDeploymentRollback(env),
		newDeploymentStatus(env), newRolloutVerb(env, "pause"), newRolloutVerb(env, "resume"), newRolloutVerb(env, "abort"),
		newRolloutVerb(env, "promote"))
}

// groupFlags are --product and --device-group, the device group every deployment command
// acts on: registered and resolved in one place, so that the commands share one help text
// and one set of errors.
type groupFlags struct{ product, group string }

func (gf *groupFlags) register(fs *flag.FlagSet) {
	productFlag(fs, &gf.product)
	fs.StringVar(&gf.group, "device-group", "", "the device group `PRODUCT/GROUP`, or GROUP with --product (required)")
}

// resolve looks the group up: its tenant's client, the tenant, the group and its name as
// PRODUCT/GROUP or as given.
func (gf *groupFlags) resolve(ctx context.Context, s *session) (*client.Client, string, client.DeviceGroup, string, error) {
	if gf.group == "" {
		return nil, "", client.DeviceGroup{}, "", usagef("--device-group PRODUCT/GROUP is required")
	}
	c, tenant, g, err := s.resolveGroup(ctx, gf.product, []string{gf.group})
	if err != nil {
		return nil, "", client.DeviceGroup{}, "", err
	}
	name := gf.group
	if gf.product != "" {
		name = gf.product + "/" + gf.group
	}
	return c, tenant, g, name, nil
}

func deploymentFields(d client.Deployment, group string) [][2]string {
	f := [][2]string{{"ID", d.ID}, {"Device group", group + " (" + d.GroupID + ")"}, {"Image", d.Target},
		{"SHA-256", d.SHA256}, {"Created", fmtTime(d.CreatedAt)}, {"Created by", d.CreatedBy}}
	if d.Reverts != "" {
		f = append(f, [2]string{"Reverts", d.Reverts})
	}
	if d.IgnoreWindow {
		f = append(f, [2]string{"Maintenance windows", "ignored (security update)"})
	}
	if r := d.Rollout; r != nil {
		f = append(f, [2]string{"Rollout", rolloutState(*r)}, [2]string{"Stages", fmtStages(r.Stages)},
			[2]string{"Soak", (time.Duration(r.SoakSeconds) * time.Second).String()},
			[2]string{"Gate", fmtGate(r.Gate)}, [2]string{"Auto-rollback", yesNo(r.AutoRollback)})
		if r.BaseTarget != "" {
			f = append(f, [2]string{"Others run", r.BaseTarget})
		}
		if r.Trip != nil {
			f = append(f, [2]string{"Tripped", fmtTrip(*r.Trip)})
		}
	}
	return f
}

func newDeploymentCreate(env *Env) *ffcli.Command {
	var gf groupFlags
	var st stagedFlags
	var target string
	return newVerb(env, "deployment", verb{
		name:   "create",
		short:  "Deploy an application image to a device group, at once or in stages.",
		tenant: true,
		long: `Deploys the published application image --image (apps/NAME/VERSION) to the device group:
its devices take it at their next update check. The image must be in the tenant's current
apps.json ('moat image add') and made for the group's product. Needs the Contributor role.

With --stages the deployment is staged: the stages are cumulative percentages of the group,
ascending to 100 (--stages 1,10,50,100; a trailing % is allowed). Each device lands in a
stage by a stable hash of the deployment and its ID, so it never flips between versions,
and devices outside the open stages keep the group's previous image. A stage advances when
--soak has passed and the health gate holds for the devices already on the new image:
--max-crash-rate (app crashes per device-hour), --min-crash-free (percent of devices without
a crash) and --max-failed-installs (percent of install attempts that failed), judged once
the new image ran --min-device-hours and --min-installs devices tried, so that a few devices
do not decide for the whole group. Past a threshold the rollout pauses itself and records
which figure, its value and the threshold; with --auto-rollback the group also goes back to
the previous image. 'moat deployment status' shows it.

--ignore-window lets devices install at once, outside their group's maintenance window; it
is only for a security update whose security version is above the current deployment's
image's (a new anti-rollback floor), and refused otherwise.

EXAMPLES
  moat deployment create --device-group DW100/Production --image apps/dw100-app/1.0.0
  moat deployment create --device-group DW100/Production --image apps/dw100-app/1.2.0 --stages 1,10,50,100 --soak 1h --max-crash-rate 0.01 --min-crash-free 99 --max-failed-installs 5 --auto-rollback
  moat deployment create --device-group DW100/Production --image apps/dw100-app/1.2.1 --ignore-window
  moat deployment create --product DW100 --device-group "Field Test" --image apps/dw100-app/1.1.0 -o json`,
		flags: func(fs *flag.FlagSet) {
			gf.register(fs)
			fs.StringVar(&target, "image", "", "the application image `apps/NAME/VERSION` (required)")
			st.register(fs)
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if parts := strings.Split(target, "/"); len(parts) != 3 || parts[0] != "apps" || parts[1] == "" || parts[2] == "" {
				return usagef("--image must name an application image as apps/NAME/VERSION ('moat image list' shows them), got %q", clip(target))
			}
			r, err := st.rollout(s.fs)
			if err != nil {
				return err
			}
			c, tenant, g, name, err := gf.resolve(ctx, s)
			if err != nil {
				return err
			}
			d, err := c.CreateDeployment(ctx, tenant, g.ProductID, g.ID, client.DeploymentCreate{Target: target, Rollout: r, IgnoreWindow: st.ignoreWindow})
			if err != nil {
				return err
			}
			return s.show(d, deploymentFields(d, name))
		},
	})
}

func newDeploymentList(env *Env) *ffcli.Command {
	var gf groupFlags
	return newVerb(env, "deployment", verb{
		name:   "list",
		short:  "List a device group's deployments, the current one first.",
		tenant: true,
		long: `Lists the deployments of the device group, newest first; the first is the one its devices
run now.

EXAMPLES
  moat deployment list --device-group DW100/Production
  moat deployment list --product DW100 --device-group Production -o json`,
		flags: gf.register,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, g, _, err := gf.resolve(ctx, s)
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.Deployment], error) {
				return c.ListDeployments(ctx, tenant, g.ProductID, g.ID, o)
			})
			if err != nil {
				return err
			}
			current := ""
			if len(items) > 0 {
				current = items[0].ID
			}
			return printList(s, items, []string{"ID", "IMAGE", "CURRENT", "CREATED", "CREATED BY", "SHA-256"}, func(d client.Deployment) []string {
				return []string{d.ID, d.Target, yesNo(d.ID == current), fmtTime(d.CreatedAt), d.CreatedBy, d.SHA256}
			})
		},
	})
}

func newDeploymentShow(env *Env) *ffcli.Command {
	var gf groupFlags
	return newVerb(env, "deployment", verb{
		name:   "show",
		args:   "ID",
		short:  "Show one of a device group's deployments.",
		tenant: true,
		long: `Shows a deployment of the device group: its image and hash, when and by whom it was made,
and, for a rollback, the deployment it reverts.

EXAMPLES
  moat deployment show dep_0193... --device-group DW100/Production
  moat deployment show dep_0193... --device-group DW100/Production -o json`,
		flags: gf.register,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "deployment ID"); err != nil {
				return err
			}
			c, tenant, g, name, err := gf.resolve(ctx, s)
			if err != nil {
				return err
			}
			d, err := c.GetDeployment(ctx, tenant, g.ProductID, g.ID, args[0])
			if err != nil {
				return err
			}
			return s.show(d, deploymentFields(d, name))
		},
	})
}

func newDeploymentRollback(env *Env) *ffcli.Command {
	var gf groupFlags
	var to string
	return newVerb(env, "deployment", verb{
		name:   "rollback",
		short:  "Deploy an earlier deployment's image to a device group again.",
		tenant: true,
		long: `Rolls the device group back: deploys the image of the deployment before the current one
(or of --to ID) again, as a new deployment that names the one it reverts. The image must
still be in the tenant's current apps.json and made for the group's product, as for
'deployment create'; a revoked image is refused and nothing changes. Rolling back a
rollback deploys the reverted image again. Needs the Contributor role.

EXAMPLES
  moat deployment rollback --device-group DW100/Production
  moat deployment rollback --device-group DW100/Production --to dep_0193... -o json`,
		flags: func(fs *flag.FlagSet) {
			gf.register(fs)
			fs.StringVar(&to, "to", "", "the earlier deployment `ID` whose image to deploy again (default: the one before the current one)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, g, name, err := gf.resolve(ctx, s)
			if err != nil {
				return err
			}
			d, err := c.RollbackDeployment(ctx, tenant, g.ProductID, g.ID, client.DeploymentRollback{To: to})
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(d)
			}
			fmt.Fprintf(s.env.Stdout, "Rolled %s back: %s reverts %s; the group runs %s again.\n", clean(name), d.ID, d.Reverts, clean(d.Target))
			return s.show(d, deploymentFields(d, name))
		},
	})
}

// Defaults of the gate's minimum data (the server's device.DefaultMinDeviceHours and
// DefaultMinInstalls; TestDeployment_GateDefaults holds them equal).
const (
	defaultMinDeviceHours = 24.0
	defaultMinInstalls    = 10
)

// optionalFloat is a flag that may be left unset (a threshold that is not checked).
type optionalFloat struct{ v *float64 }

func (o *optionalFloat) String() string {
	if o == nil || o.v == nil {
		return ""
	}
	return strconv.FormatFloat(*o.v, 'g', -1, 64)
}

func (o *optionalFloat) Set(s string) error {
	f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("want a number, got %q", clip(s))
	}
	o.v = &f
	return nil
}

// stagedFlags are the flags of a staged deployment.
type stagedFlags struct {
	stages                                string
	soak                                  string
	maxCrashRate, minCrashFree, maxFailed optionalFloat
	minDeviceHours                        float64
	minInstalls                           int
	autoRollback, ignoreWindow            bool
}

func (st *stagedFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&st.stages, "stages", "", "deploy in stages: cumulative `PERCENTS` of the group, ascending to 100 (1,10,50,100)")
	fs.StringVar(&st.soak, "soak", "", "how long each stage runs before it may advance, a `DURATION` such as 1h (required with --stages)")
	fs.Var(&st.maxCrashRate, "max-crash-rate", "gate: at most `F` app crashes per device-hour on the new image")
	fs.Var(&st.minCrashFree, "min-crash-free", "gate: at least `P` percent of devices on the new image without a crash")
	fs.Var(&st.maxFailed, "max-failed-installs", "gate: at most `P` percent of install attempts failed or rolled back")
	fs.Float64Var(&st.minDeviceHours, "min-device-hours", defaultMinDeviceHours, "judge the crash figures once the new image ran `H` device-hours in the group")
	fs.IntVar(&st.minInstalls, "min-installs", defaultMinInstalls, "judge the failed installs once `N` devices tried the new image")
	fs.BoolVar(&st.autoRollback, "auto-rollback", false, "when the gate trips, also roll the group back to the previous image")
	fs.BoolVar(&st.ignoreWindow, "ignore-window", false, "install outside maintenance windows (only a security update that raises the anti-rollback floor)")
}

// rollout is the request's staged part, nil without --stages; the rollout flags without
// --stages are a usage error. The server checks the ranges.
func (st *stagedFlags) rollout(fs *flag.FlagSet) (*client.RolloutCreate, error) {
	if st.stages == "" {
		var set []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "soak", "max-crash-rate", "min-crash-free", "max-failed-installs", "min-device-hours", "min-installs", "auto-rollback":
				set = append(set, "--"+f.Name)
			}
		})
		if len(set) > 0 {
			return nil, usagef("%s only apply to a staged deployment: add --stages", strings.Join(set, ", "))
		}
		return nil, nil
	}
	var stages []float64
	for p := range strings.SplitSeq(st.stages, ",") {
		f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(p), "%"), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, usagef("--stages must list percentages such as 1,10,50,100, got %q", clip(st.stages))
		}
		stages = append(stages, f)
	}
	if st.soak == "" {
		return nil, usagef("--soak is required with --stages (how long each stage runs, such as 1h)")
	}
	if _, err := time.ParseDuration(st.soak); err != nil {
		return nil, usagef("--soak must be a duration such as 30m or 1h, got %q", clip(st.soak))
	}
	return &client.RolloutCreate{Stages: stages, Soak: st.soak, AutoRollback: st.autoRollback, Gate: client.Gate{
		MaxCrashRate: st.maxCrashRate.v, MinCrashFree: st.minCrashFree.v, MaxFailedInstalls: st.maxFailed.v,
		MinDeviceHours: st.minDeviceHours, MinInstalls: st.minInstalls}}, nil
}

func fmtStages(stages []float64) string {
	parts := make([]string, len(stages))
	for i, p := range stages {
		parts[i] = fmtPercent(p)
	}
	return strings.Join(parts, ", ")
}

func fmtPercent(p float64) string { return strconv.FormatFloat(p, 'g', 4, 64) + "%" }

func fmtNumber(f float64) string { return strconv.FormatFloat(f, 'g', 4, 64) }

// rolloutState says where a rollout stands: "running, stage 2 of 4 (10%)".
func rolloutState(r client.Rollout) string {
	s := strings.ReplaceAll(r.State, "_", " ")
	if r.Stage >= 0 && r.Stage < len(r.Stages) {
		s += fmt.Sprintf(", stage %d of %d (%s)", r.Stage+1, len(r.Stages), fmtPercent(r.Stages[r.Stage]))
	}
	return s
}

// fmtGate lists the gate's thresholds and the data it waits for.
func fmtGate(g client.Gate) string {
	var parts []string
	if g.MaxCrashRate != nil {
		parts = append(parts, "crash rate <= "+fmtNumber(*g.MaxCrashRate)+"/device-hour")
	}
	if g.MinCrashFree != nil {
		parts = append(parts, "crash-free >= "+fmtPercent(*g.MinCrashFree))
	}
	if g.MaxFailedInstalls != nil {
		parts = append(parts, "failed installs <= "+fmtPercent(*g.MaxFailedInstalls))
	}
	if len(parts) == 0 {
		return "none (each stage advances after its soak)"
	}
	return strings.Join(parts, ", ") + fmt.Sprintf(" (judged from %s device-hours, %d installs)", fmtNumber(g.MinDeviceHours), g.MinInstalls)
}

func fmtTrip(t client.GateTrip) string {
	return fmt.Sprintf("%s %s beyond the threshold %s in stage %d, at %s", t.Figure, fmtNumber(t.Value), fmtNumber(t.Threshold), t.Stage+1, fmtTime(t.At))
}

func newDeploymentStatus(env *Env) *ffcli.Command {
	var gf groupFlags
	return newVerb(env, "deployment", verb{
		name:   "status",
		args:   "ID",
		short:  "Show a staged deployment's rollout stage by stage, with its health gate.",
		tenant: true,
		long: `Shows a staged deployment now: its state and open stage, then a table with a row per
stage (its share of the group, whether it is open, and its devices: targeted, on the new
image, failed to install it, crashing on it), then the health gate's figures for the
devices on the new image beside their thresholds, the verdict (advancing, soaking,
waiting_for_data, tripped, or the state of a rollout that is not running) and, when the gate
paused the rollout, which figure tripped it. A deployment made without --stages has no
rollout (exit 6). Devices are counted in the stage of their hash, not an earlier one.

EXAMPLES
  moat deployment status dep_0193... --device-group DW100/Production
  moat deployment status dep_0193... --device-group DW100/Production -o json`,
		flags: gf.register,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "deployment ID"); err != nil {
				return err
			}
			c, tenant, g, name, err := gf.resolve(ctx, s)
			if err != nil {
				return err
			}
			st, err := c.GetDeploymentStatus(ctx, tenant, g.ProductID, g.ID, args[0])
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(st)
			}
			return printRolloutStatus(s, st, name)
		},
	})
}

// printRolloutStatus prints the status as a header, a table per stage and the gate.
func printRolloutStatus(s *session, st client.RolloutStatus, group string) error {
	d, r := st.Deployment, st.Deployment.Rollout
	if r == nil {
		return fmt.Errorf("deployment %s: the status has no rollout", d.ID)
	}
	if err := s.show(nil, [][2]string{{"Deployment", d.ID}, {"Device group", group}, {"Image", d.Target},
		{"Others run", orDash(r.BaseTarget)}, {"Rollout", rolloutState(*r)}, {"Verdict", st.Verdict},
		{"Next stage", fmtTimePtr(st.NextStageAt)}}); err != nil {
		return err
	}
	out := s.env.Stdout
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "STAGE\tPERCENT\tOPEN\tTARGETED\tON NEW\tFAILED\tCRASHING\t")
	for i, sg := range st.Stages {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t\n", i+1, fmtPercent(sg.Percent), yesNo(sg.Open), sg.Targeted, sg.OnNew, sg.Failed, sg.Crashing)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	f, g := st.Figures, r.Gate
	threshold := func(p *float64, op string, unit func(float64) string) string {
		if p == nil {
			return "not checked"
		}
		return op + " " + unit(*p)
	}
	perHour := func(v float64) string { return fmtNumber(v) + "/device-hour" }
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GATE\tNOW\tTHRESHOLD")
	fmt.Fprintf(tw, "crash rate\t%s\t%s\n", perHour(f.CrashRate()), threshold(g.MaxCrashRate, "at most", perHour))
	fmt.Fprintf(tw, "crash-free devices\t%s\t%s\n", fmtPercent(f.CrashFreePercent()), threshold(g.MinCrashFree, "at least", fmtPercent))
	fmt.Fprintf(tw, "failed installs\t%s\t%s\n", fmtPercent(f.FailedInstallPercent()), threshold(g.MaxFailedInstalls, "at most", fmtPercent))
	fmt.Fprintf(tw, "device-hours\t%s\tat least %s to judge crashes\n", fmtNumber(f.DeviceHours), fmtNumber(g.MinDeviceHours))
	fmt.Fprintf(tw, "install attempts\t%d\tat least %d to judge installs\n", f.InstallAttempts, g.MinInstalls)
	fmt.Fprintf(tw, "devices on new image\t%d\t%d crashed, %d crashes\n", f.Running, f.CrashedRunning, f.Crashes)
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Trip != nil {
		fmt.Fprintf(out, "\nTripped: %s\n", clean(fmtTrip(*r.Trip)))
	}
	return nil
}

// rolloutVerbs are the changes of a rollout: help and the confirmation's past tense.
var rolloutVerbs = map[string]struct{ short, long, done string }{
	"pause": {"Pause a staged deployment: nothing new is assigned until it is resumed.",
		`Pauses the group's current staged deployment: devices already on the new image keep it,
no other device is assigned it, and no stage advances until 'resume'. --reason is recorded
in the audit log. Needs the Contributor role.`, "Paused"},
	"resume": {"Resume a paused staged deployment.",
		`Resumes the group's current staged deployment after a pause by a person or by its health
gate: the gate's trip is cleared and the open stage soaks again from now, so the gate judges
it afresh before the next stage opens. Needs the Contributor role.`, "Resumed"},
	"abort": {"Stop a staged deployment for good.",
		`Aborts a staged deployment: it cannot be resumed; devices already on the new image keep
it and the others stay on the previous image until a new deployment ('moat deployment
create' or 'rollback'). Needs the Contributor role.`, "Aborted"},
	"promote": {"Open a staged deployment's next stage now, skipping the soak but not the gate.",
		`Promotes the group's current staged deployment: opens the next stage now (or completes the
rollout from its last stage), without waiting for the soak or the gate's minimum data. The
gate's thresholds still apply to the figures now: past one, promote is refused (exit 7) and
names the figure. --force skips the gate as well; it is recorded in the audit log as
deployment.promote_forced with --reason. A paused rollout is resumed by a promote. Needs the
Contributor role.`, "Promoted"},
}

// newRolloutVerb is 'moat deployment pause|resume|abort|promote ID'.
func newRolloutVerb(env *Env, name string) *ffcli.Command {
	var gf groupFlags
	var reason string
	var force bool
	h := rolloutVerbs[name]
	examples := "\n\nEXAMPLES\n  moat deployment " + name + " dep_0193... --device-group DW100/Production --reason \"support ticket 4711\""
	if name == "promote" {
		examples += "\n  moat deployment promote dep_0193... --device-group DW100/Production --force --reason \"the crashes are a test rig\""
	}
	return newVerb(env, "deployment", verb{
		name:   name,
		args:   "ID",
		short:  h.short,
		tenant: true,
		long:   h.long + examples,
		flags: func(fs *flag.FlagSet) {
			gf.register(fs)
			fs.StringVar(&reason, "reason", "", "why, for the audit log (at most 500 bytes)")
			if name == "promote" {
				fs.BoolVar(&force, "force", false, "skip the health gate too (audited as deployment.promote_forced)")
			}
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "deployment ID"); err != nil {
				return err
			}
			if len(reason) > 500 {
				return usagef("--reason must be at most 500 bytes")
			}
			c, tenant, g, gname, err := gf.resolve(ctx, s)
			if err != nil {
				return err
			}
			act := map[string]func(context.Context, string, string, string, string, client.RolloutAction) (client.Deployment, error){
				"pause": c.PauseDeployment, "resume": c.ResumeDeployment, "abort": c.AbortDeployment, "promote": c.PromoteDeployment,
			}[name]
			d, err := act(ctx, tenant, g.ProductID, g.ID, args[0], client.RolloutAction{Reason: reason, Force: force})
			if err != nil {
				return err
			}
			if !s.json() && d.Rollout != nil {
				fmt.Fprintf(s.env.Stdout, "%s %s: %s.\n", h.done, d.ID, rolloutState(*d.Rollout))
			}
			return s.show(d, deploymentFields(d, gname))
		},
	})
}
