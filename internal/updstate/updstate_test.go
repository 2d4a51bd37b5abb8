package updstate_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/updstate"
)

var at = time.Date(2025, 6, 7, 8, 9, 10, 123456789, time.UTC)

// valid returns a valid report of each state.
func valid() map[string]updstate.Report {
	id := errreport.NewID(at)
	until := at.Add(time.Hour)
	app := "apps/dw100-app/2.0.0"
	return map[string]updstate.Report{
		"assigned":    {ID: id, At: at, State: updstate.Assigned, Kind: updstate.KindApp, Target: app, Version: "2.0.0"},
		"downloading": {ID: id, At: at, State: updstate.Downloading, Kind: updstate.KindApp, Target: app, BytesDone: 10, BytesTotal: 100},
		"downloading none yet": {ID: "0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f", At: at, State: updstate.Downloading, Kind: updstate.KindOS,
			Target: "os/moat-os/1.1.0", BytesTotal: 1},
		"installed":   {ID: id, At: at, State: updstate.Installed, Kind: updstate.KindOS, Target: "os/moat-os/1.1.0", Version: "1.1.0"},
		"committed":   {ID: id, At: time.Unix(0, 0).UTC(), State: updstate.Committed, Kind: updstate.KindApp, Target: app},
		"rolled_back": {ID: id, At: at, State: updstate.RolledBack, Kind: updstate.KindApp, Target: app, Code: "health_check_failed", Message: "crashed 3 times\n\tSIGSEGV"},
		"failed":      {ID: id, At: at, State: updstate.Failed, Kind: updstate.KindApp, Target: app, Code: "download_failed"},
		"deferred":    {ID: id, At: at, State: updstate.Deferred, Kind: updstate.KindOS, Target: "os/moat-os/1.1.0", DeferredUntil: &until, Code: "wash_cycle_running"},
		"unicode":     {ID: id, At: at.In(time.FixedZone("x", 3600)), State: updstate.Failed, Kind: updstate.KindApp, Target: app, Code: "x", Message: "Spülmaschine 🔥 <b>&"},
	}
}

func TestValidate_AcceptsEveryState(t *testing.T) {
	t.Parallel()
	seen := map[updstate.State]bool{}
	for name, r := range valid() {
		if err := r.Validate(); err != nil {
			t.Errorf("%s: Validate() = %v, want nil", name, err)
		}
		seen[r.State] = true
	}
	for _, s := range updstate.States {
		if !seen[s] {
			t.Errorf("no valid report of state %s in the test", s)
		}
	}
}

func with(r updstate.Report, fn func(*updstate.Report)) updstate.Report {
	fn(&r)
	return r
}

func wantProblem(t *testing.T, err error) *problem.Error {
	t.Helper()
	p, ok := errors.AsType[*problem.Error](err)
	if !ok || p.Kind != problem.Invalid {
		t.Fatalf("error = %v, want an Invalid problem", err)
	}
	return p
}

// TestValidate_Rejects: each bad report is refused with a problem naming the field.
func TestValidate_Rejects(t *testing.T) {
	t.Parallel()
	v := valid()
	asg, dl, fail, def := v["assigned"], v["downloading"], v["failed"], v["deferred"]
	cases := []struct {
		name, field, code string
		r                 updstate.Report
	}{
		{"no ID", "id", "invalid_report_id", with(asg, func(r *updstate.Report) { r.ID = "" })},
		{"path in ID", "id", "invalid_report_id", with(asg, func(r *updstate.Report) { r.ID = "../../../../../etc/passwd0" })},
		{"no time", "at", "at_required", with(asg, func(r *updstate.Report) { r.At = time.Time{} })},
		{"before 1970", "at", "invalid_at", with(asg, func(r *updstate.Report) { r.At = time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC) })},
		{"after 9999", "at", "invalid_at", with(asg, func(r *updstate.Report) { r.At = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) })},
		{"no state", "state", "state_required", with(asg, func(r *updstate.Report) { r.State = "" })},
		{"unknown state", "state", "invalid_state", with(asg, func(r *updstate.Report) { r.State = "bricked" })},
		{"no kind", "kind", "kind_required", with(asg, func(r *updstate.Report) { r.Kind = "" })},
		{"unknown kind", "kind", "invalid_kind", with(asg, func(r *updstate.Report) { r.Kind = "firmware" })},
		{"no target", "target", "target_required", with(asg, func(r *updstate.Report) { r.Target = "" })},
		{"target a URL", "target", "invalid_target", with(asg, func(r *updstate.Report) { r.Target = "https://evil/x" })},
		{"target dot-dot", "target", "invalid_target", with(asg, func(r *updstate.Report) { r.Target = "apps/../1" })},
		{"target too long", "target", "invalid_target", with(asg, func(r *updstate.Report) { r.Target = "apps/a/" + strings.Repeat("1", 250) })},
		{"target of other kind", "target", "target_kind_mismatch", with(asg, func(r *updstate.Report) { r.Target = "os/moat-os/1" })},
		{"version with space", "version", "invalid_version", with(asg, func(r *updstate.Report) { r.Version = "1 0" })},
		{"version too long", "version", "invalid_version", with(asg, func(r *updstate.Report) { r.Version = strings.Repeat("1", 65) })},
		{"downloading without total", "bytes_total", "bytes_total_required", with(dl, func(r *updstate.Report) { r.BytesTotal = 0 })},
		{"downloading past total", "bytes_done", "invalid_bytes_done", with(dl, func(r *updstate.Report) { r.BytesDone = 101 })},
		{"downloading negative", "bytes_done", "invalid_bytes_done", with(dl, func(r *updstate.Report) { r.BytesDone = -1 })},
		{"failed without code", "code", "code_required", with(fail, func(r *updstate.Report) { r.Code = "" })},
		{"rolled back without code", "code", "code_required", with(v["rolled_back"], func(r *updstate.Report) { r.Code = "" })},
		{"code not snake_case", "code", "invalid_code", with(fail, func(r *updstate.Report) { r.Code = "Bad-Code" })},
		{"message escape", "message", "control_character", with(fail, func(r *updstate.Report) { r.Message = "\x1b]0;pwned\x07" })},
		{"message carriage return", "message", "control_character", with(fail, func(r *updstate.Report) { r.Message = "ok\rFAKE" })},
		{"message bidi", "message", "control_character", with(fail, func(r *updstate.Report) { r.Message = "\u202egnp.exe" })},
		{"message invalid UTF-8", "message", "invalid_utf8", with(fail, func(r *updstate.Report) { r.Message = "\xff\xfe" })},
		{"message too long", "message", "message_too_long", with(fail, func(r *updstate.Report) { r.Message = strings.Repeat("ü", 513) })},
		{"deferred without until", "deferred_until", "deferred_until_required", with(def, func(r *updstate.Report) { r.DeferredUntil = nil })},
		{"deferred until year 0", "deferred_until", "deferred_until_required", with(def, func(r *updstate.Report) { r.DeferredUntil = &time.Time{} })},
		// Fields of another state.
		{"assigned with bytes", "bytes_done", "field_not_allowed", with(asg, func(r *updstate.Report) { r.BytesDone = 1 })},
		{"failed with total", "bytes_total", "field_not_allowed", with(fail, func(r *updstate.Report) { r.BytesTotal = 1 })},
		{"committed with code", "code", "field_not_allowed", with(v["committed"], func(r *updstate.Report) { r.Code = "x" })},
		{"installed with message", "message", "field_not_allowed", with(v["installed"], func(r *updstate.Report) { r.Message = "x" })},
		{"failed with until", "deferred_until", "field_not_allowed", with(fail, func(r *updstate.Report) { u := at; r.DeferredUntil = &u })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := wantProblem(t, tc.r.Validate())
			if p.Field != tc.field || p.Code != tc.code {
				t.Errorf("Validate() = field %q code %q (%v), want field %q code %q", p.Field, p.Code, p, tc.field, tc.code)
			}
		})
	}
}

func TestValidate_ReportsEveryProblem(t *testing.T) {
	t.Parallel()
	r := updstate.Report{State: updstate.Committed, Message: "x", BytesDone: 1}
	p := wantProblem(t, r.Validate())
	var fields []string
	for _, f := range p.Fields {
		fields = append(fields, f.Field)
	}
	want := []string{"id", "at", "kind", "target", "bytes_done", "message"}
	if d := cmp.Diff(want, fields); d != "" {
		t.Errorf("Validate() fields (-want +got):\n%s", d)
	}
}

func TestBatch_Validate(t *testing.T) {
	t.Parallel()
	r := valid()["assigned"]
	if err := (updstate.Batch{Reports: []updstate.Report{r}}).Validate(); err != nil {
		t.Errorf("Validate(one report) = %v", err)
	}
	if p := wantProblem(t, updstate.Batch{}.Validate()); p.Code != "reports_required" {
		t.Errorf("Validate(no reports) code = %q, want reports_required", p.Code)
	}
	many := updstate.Batch{Reports: slices.Repeat([]updstate.Report{r}, updstate.MaxBatch+1)}
	if p := wantProblem(t, many.Validate()); p.Code != "too_many_reports" {
		t.Errorf("Validate(%d reports) code = %q, want too_many_reports", len(many.Reports), p.Code)
	}
	bad := updstate.Batch{Reports: []updstate.Report{r, r, with(r, func(r *updstate.Report) { r.State = "nope" })}}
	p := wantProblem(t, bad.Validate())
	if p.Field != "reports[2].state" || !strings.Contains(p.Detail, r.ID) {
		t.Errorf("Validate(bad third report) = field %q detail %q, want reports[2].state naming %s", p.Field, p.Detail, r.ID)
	}
}

// TestBatch_LargestFits: MaxBatch reports of the largest valid size, every character one
// that encoding/json escapes to six bytes, fit MaxBatchBytes, and one fits MaxReportBytes.
func TestBatch_LargestFits(t *testing.T) {
	t.Parallel()
	until := time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(11*3600+59*60)))
	r := updstate.Report{
		ID: "0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f", At: until, State: updstate.Deferred, Kind: updstate.KindApp,
		Target: "apps/" + strings.Repeat("<", 120) + "/" + strings.Repeat("&", 124), Version: strings.Repeat(">", 64),
		Code: strings.Repeat("a", 64), Message: strings.Repeat("<", updstate.MaxMessageBytes), DeferredUntil: &until,
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("largest report: Validate() = %v", err)
	}
	one, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(one) > updstate.MaxReportBytes {
		t.Errorf("largest report is %d bytes of JSON, more than MaxReportBytes %d", len(one), updstate.MaxReportBytes)
	}
	all, err := json.Marshal(updstate.Batch{Reports: slices.Repeat([]updstate.Report{r}, updstate.MaxBatch)})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) > updstate.MaxBatchBytes {
		t.Errorf("a batch of %d largest reports is %d bytes, more than MaxBatchBytes %d", updstate.MaxBatch, len(all), updstate.MaxBatchBytes)
	}
}

func TestDecode_RoundTrip(t *testing.T) {
	t.Parallel()
	for name, r := range valid() {
		b, err := updstate.Encode(r)
		if err != nil {
			t.Fatalf("%s: Encode = %v", name, err)
		}
		got, err := updstate.Decode(b)
		if err != nil {
			t.Fatalf("%s: Decode(Encode(r)) = %v", name, err)
		}
		if d := cmp.Diff(r, got); d != "" {
			t.Errorf("%s: Decode(Encode(r)) mismatch (-want +got):\n%s", name, d)
		}
	}
}

func TestDecode_IsStrict(t *testing.T) {
	t.Parallel()
	good, err := updstate.Encode(valid()["downloading"])
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"device field":     strings.Replace(string(good), `{`, `{"device_id":"x",`, 1),
		"trailing data":    string(good) + "{}",
		"array":            "[" + string(good) + "]",
		"invalid UTF-8":    strings.Replace(string(good), `"app"`, "\"app\xff\"", 1),
		"truncated":        string(good[:len(good)/2]),
		"wrong type":       strings.Replace(string(good), `"bytes_done":10`, `"bytes_done":"10"`, 1),
		"empty":            "",
		"null":             "null",
		"invalid after ok": strings.Replace(string(good), `"downloading"`, `"nope"`, 1),
		"too large":        strings.Replace(string(good), `{`, `{"message":"`+strings.Repeat(" ", updstate.MaxReportBytes)+`",`, 1),
	} {
		if _, err := updstate.Decode([]byte(data)); err == nil {
			t.Errorf("Decode(%s) = nil error, want a refusal", name)
		} else if p, ok := errors.AsType[*problem.Error](err); !ok || p.Kind == problem.Internal {
			t.Errorf("Decode(%s) error %v is not a client problem", name, err)
		}
	}
}

func TestNewer(t *testing.T) {
	t.Parallel()
	a := valid()["assigned"]
	b := with(a, func(r *updstate.Report) { r.At = r.At.Add(time.Second) })
	c := with(b, func(r *updstate.Report) { r.ID = errreport.NewID(r.At) })
	if !updstate.Newer(b, a) || updstate.Newer(a, b) {
		t.Error("Newer: a later time is not newer")
	}
	if updstate.Newer(b, c) == updstate.Newer(c, b) {
		t.Error("Newer: equal times are not ordered by ID")
	}
}
