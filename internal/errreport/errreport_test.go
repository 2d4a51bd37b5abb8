package errreport_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/problem"
)

var at = time.Date(2025, 6, 7, 8, 9, 10, 123456789, time.UTC)

func intp(n int) *int { return &n }

// valid returns a valid report of each kind.
func valid() map[string]errreport.Report {
	id := errreport.NewID(at)
	return map[string]errreport.Report{
		"app_crash exit": {ID: id, Kind: errreport.AppCrash, At: at, ImagePath: "apps/dw100-app/2.0.0", ImageVersion: "2.0.0",
			ExitCode: intp(2), UptimeSeconds: 3, StderrTail: "panic: heater\n\tgoroutine 1\n", Message: "exited with status 2"},
		"app_crash signal": {ID: "0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f", Kind: errreport.AppCrash, At: at,
			ImagePath: "apps/dw100-app/2.0.0", Signal: "SIGSEGV"},
		"app_crash exit 0 uptime 0": {ID: id, Kind: errreport.AppCrash, At: at, ImagePath: "apps/dw100-app/2.0.0", ExitCode: intp(0)},
		"update_failed": {ID: id, Kind: errreport.UpdateFailed, At: at, ImagePath: "os/moat-os/1.0.0", Step: errreport.StepVerify,
			Target: "apps/dw100-app/2.0.0", Code: "signature_invalid", Message: "the image's signature does not verify"},
		"attestation_refused": {ID: id, Kind: errreport.AttestationRefused, At: time.Unix(0, 0).UTC(), Code: "refused"},
		"capability_denied": {ID: id, Kind: errreport.CapabilityDenied, At: at, ImagePath: "apps/dw100-app/2.0.0",
			Capability: "host:evil.example:443"},
		"agent":   {ID: id, Kind: errreport.Agent, At: at, Code: errreport.CodeQueueFull, Dropped: 12, Message: "dropped 12 reports"},
		"unicode": {ID: id, Kind: errreport.Agent, At: at.In(time.FixedZone("x", 3600)), Message: "Spülmaschine \u00fcberhitzt 🔥 <b>&"},
	}
}

func TestValidate_AcceptsEveryKind(t *testing.T) {
	t.Parallel()
	for name, r := range valid() {
		if err := r.Validate(); err != nil {
			t.Errorf("%s: Validate() = %v, want nil", name, err)
		}
	}
}

// TestValidate_Rejects: each bad report is refused with a problem naming the field.
func TestValidate_Rejects(t *testing.T) {
	t.Parallel()
	base := valid()["app_crash exit"]
	upd := valid()["update_failed"]
	cases := []struct {
		name  string
		r     errreport.Report
		field string
		code  string
	}{
		{"no ID", with(base, func(r *errreport.Report) { r.ID = "" }), "id", "invalid_report_id"},
		{"lower-case ULID", with(base, func(r *errreport.Report) { r.ID = strings.ToLower(r.ID) }), "id", "invalid_report_id"},
		{"ULID overflow", with(base, func(r *errreport.Report) { r.ID = "8" + r.ID[1:] }), "id", "invalid_report_id"},
		{"ULID with I", with(base, func(r *errreport.Report) { r.ID = r.ID[:25] + "I" }), "id", "invalid_report_id"},
		{"upper-case UUID", with(base, func(r *errreport.Report) { r.ID = "0F2D7C1E-8A55-4C2B-9D0E-6B1A2C3D4E5F" }), "id", "invalid_report_id"},
		{"path in ID", with(base, func(r *errreport.Report) { r.ID = "../../../../../etc/passwd0" }), "id", "invalid_report_id"},
		{"no kind", with(base, func(r *errreport.Report) { r.Kind = "" }), "kind", "kind_required"},
		{"unknown kind", with(base, func(r *errreport.Report) { r.Kind = "kernel_panic" }), "kind", "invalid_kind"},
		{"no time", with(base, func(r *errreport.Report) { r.At = time.Time{} }), "at", "at_required"},
		{"before 1970", with(base, func(r *errreport.Report) { r.At = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC) }), "at", "invalid_at"},
		{"after 9999", with(base, func(r *errreport.Report) { r.At = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }), "at", "invalid_at"},
		{"crash without image", with(base, func(r *errreport.Report) { r.ImagePath = "" }), "image_path", "image_path_required"},
		{"image path not an image", with(base, func(r *errreport.Report) { r.ImagePath = "/bin/sh" }), "image_path", "invalid_image_path"},
		{"image path with dot-dot", with(base, func(r *errreport.Report) { r.ImagePath = "apps/../1" }), "image_path", "invalid_image_path"},
		{"image path with space", with(base, func(r *errreport.Report) { r.ImagePath = "apps/dw 100/1" }), "image_path", "invalid_image_path"},
		{"long image path", with(base, func(r *errreport.Report) { r.ImagePath = "apps/a/" + strings.Repeat("1", 250) }), "image_path", "invalid_image_path"},
		{"long version", with(base, func(r *errreport.Report) { r.ImageVersion = strings.Repeat("1", 65) }), "image_version", "invalid_image_version"},
		{"code not snake_case", with(base, func(r *errreport.Report) { r.Code = "Bad-Code" }), "code", "invalid_code"},
		{"crash with exit and signal", with(base, func(r *errreport.Report) { r.Signal = "SIGKILL" }), "exit_code", "exit_code_or_signal"},
		{"crash with neither", with(base, func(r *errreport.Report) { r.ExitCode = nil }), "exit_code", "exit_code_or_signal"},
		{"exit code 256", with(base, func(r *errreport.Report) { r.ExitCode = intp(256) }), "exit_code", "invalid_exit_code"},
		{"exit code -1", with(base, func(r *errreport.Report) { r.ExitCode = intp(-1) }), "exit_code", "invalid_exit_code"},
		{"bad signal", with(base, func(r *errreport.Report) { r.ExitCode, r.Signal = nil, "segv" }), "signal", "invalid_signal"},
		{"negative uptime", with(base, func(r *errreport.Report) { r.UptimeSeconds = -1 }), "uptime_seconds", "invalid_uptime_seconds"},
		{"stderr too long", with(base, func(r *errreport.Report) { r.StderrTail = strings.Repeat("x", 4097) }), "stderr_tail", "stderr_tail_too_long"},
		{"stderr escape", with(base, func(r *errreport.Report) { r.StderrTail = "\x1b]0;pwned\x07" }), "stderr_tail", "control_character"},
		{"stderr carriage return", with(base, func(r *errreport.Report) { r.StderrTail = "ok\rFAKE" }), "stderr_tail", "control_character"},
		{"stderr NUL", with(base, func(r *errreport.Report) { r.StderrTail = "a\x00b" }), "stderr_tail", "control_character"},
		{"message bidi override", with(base, func(r *errreport.Report) { r.Message = "exit \u202egnp.exe" }), "message", "control_character"},
		{"message invalid UTF-8", with(base, func(r *errreport.Report) { r.Message = "\xff\xfe" }), "message", "invalid_utf8"},
		{"message too long", with(base, func(r *errreport.Report) { r.Message = strings.Repeat("ü", 513) }), "message", "message_too_long"},
		{"update without step", with(upd, func(r *errreport.Report) { r.Step = "" }), "step", "step_required"},
		{"update with unknown step", with(upd, func(r *errreport.Report) { r.Step = "reticulate" }), "step", "invalid_step"},
		{"update without target", with(upd, func(r *errreport.Report) { r.Target, r.Step = "", errreport.StepInstall }), "target", "target_required"},
		{"update with bad target", with(upd, func(r *errreport.Report) { r.Target = "https://evil/x" }), "target", "invalid_target"},
		{"denied without capability", with(valid()["capability_denied"], func(r *errreport.Report) { r.Capability = "" }), "capability", "capability_required"},
		{"denied with bad capability", with(valid()["capability_denied"], func(r *errreport.Report) { r.Capability = "gpio 5" }), "capability", "invalid_capability"},
		{"agent with negative drops", with(valid()["agent"], func(r *errreport.Report) { r.Dropped = -3 }), "dropped", "invalid_dropped"},
		// Fields of another kind.
		{"update with exit code", with(upd, func(r *errreport.Report) { r.ExitCode = intp(1) }), "exit_code", "field_not_allowed"},
		{"update with signal", with(upd, func(r *errreport.Report) { r.Signal = "SIGSEGV" }), "signal", "field_not_allowed"},
		{"update with uptime", with(upd, func(r *errreport.Report) { r.UptimeSeconds = 1 }), "uptime_seconds", "field_not_allowed"},
		{"update with stderr", with(upd, func(r *errreport.Report) { r.StderrTail = "x" }), "stderr_tail", "field_not_allowed"},
		{"crash with step", with(base, func(r *errreport.Report) { r.Step = errreport.StepBoot }), "step", "field_not_allowed"},
		{"crash with target", with(base, func(r *errreport.Report) { r.Target = "apps/a/1" }), "target", "field_not_allowed"},
		{"crash with capability", with(base, func(r *errreport.Report) { r.Capability = "gpio:5" }), "capability", "field_not_allowed"},
		{"crash with dropped", with(base, func(r *errreport.Report) { r.Dropped = 1 }), "dropped", "field_not_allowed"},
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

func with(r errreport.Report, fn func(*errreport.Report)) errreport.Report {
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

func TestValidate_ReportsEveryProblem(t *testing.T) {
	t.Parallel()
	r := errreport.Report{Kind: errreport.AppCrash, Message: "\x1b[31m", Step: "x"}
	p := wantProblem(t, r.Validate())
	var fields []string
	for _, f := range p.Fields {
		fields = append(fields, f.Field)
	}
	want := []string{"id", "at", "message", "image_path", "exit_code", "step"}
	if d := cmp.Diff(want, fields); d != "" {
		t.Errorf("Validate() fields (-want +got):\n%s", d)
	}
}

func TestBatch_Validate(t *testing.T) {
	t.Parallel()
	r := valid()["agent"]
	if err := (errreport.Batch{Reports: []errreport.Report{r}}).Validate(); err != nil {
		t.Errorf("Validate(one report) = %v", err)
	}
	if p := wantProblem(t, errreport.Batch{}.Validate()); p.Code != "reports_required" {
		t.Errorf("Validate(no reports) code = %q, want reports_required", p.Code)
	}
	many := errreport.Batch{Reports: slices.Repeat([]errreport.Report{r}, errreport.MaxBatch+1)}
	if p := wantProblem(t, many.Validate()); p.Code != "too_many_reports" {
		t.Errorf("Validate(%d reports) code = %q, want too_many_reports", len(many.Reports), p.Code)
	}
	bad := errreport.Batch{Reports: []errreport.Report{r, r, with(r, func(r *errreport.Report) { r.Kind = "nope" })}}
	p := wantProblem(t, bad.Validate())
	if p.Field != "reports[2].kind" || !strings.Contains(p.Detail, r.ID) {
		t.Errorf("Validate(bad third report) = field %q detail %q, want reports[2].kind naming %s", p.Field, p.Detail, r.ID)
	}
}

// TestBatch_LargestFits: MaxBatch reports of the largest valid size, every character one
// that encoding/json escapes to six bytes, fit MaxBatchBytes, and one fits MaxReportBytes.
func TestBatch_LargestFits(t *testing.T) {
	t.Parallel()
	r := errreport.Report{
		ID: errreport.NewID(at), Kind: errreport.AppCrash, At: at.In(time.FixedZone("", -(11*3600 + 59*60))),
		ImagePath: "apps/" + strings.Repeat("<", 120) + "/" + strings.Repeat("&", 124), ImageVersion: strings.Repeat(">", 64),
		Code: strings.Repeat("a", 64), Message: strings.Repeat("<", 1024), ExitCode: intp(255),
		UptimeSeconds: errreport.MaxUptimeSeconds, StderrTail: strings.Repeat("<", errreport.MaxStderrTailBytes),
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("largest report: Validate() = %v", err)
	}
	one, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(one) > errreport.MaxReportBytes {
		t.Errorf("largest report is %d bytes of JSON, more than MaxReportBytes %d", len(one), errreport.MaxReportBytes)
	}
	all, err := json.Marshal(errreport.Batch{Reports: slices.Repeat([]errreport.Report{r}, errreport.MaxBatch)})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) > errreport.MaxBatchBytes {
		t.Errorf("a batch of %d largest reports is %d bytes, more than MaxBatchBytes %d", errreport.MaxBatch, len(all), errreport.MaxBatchBytes)
	}
}

func TestDecode_RoundTrip(t *testing.T) {
	t.Parallel()
	for name, r := range valid() {
		b, err := errreport.Encode(r)
		if err != nil {
			t.Fatalf("%s: Encode = %v", name, err)
		}
		got, err := errreport.Decode(b)
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
	good, err := errreport.Encode(valid()["agent"])
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"unknown field":    strings.Replace(string(good), `{`, `{"device_id":"x",`, 1),
		"trailing data":    string(good) + "{}",
		"array":            "[" + string(good) + "]",
		"invalid UTF-8":    strings.Replace(string(good), `"agent"`, "\"agent\xff\"", 1),
		"truncated":        string(good[:len(good)/2]),
		"wrong type":       strings.Replace(string(good), `"dropped":12`, `"dropped":"12"`, 1),
		"empty":            "",
		"null":             "null",
		"invalid after ok": strings.Replace(string(good), `"agent"`, `"nope"`, 1),
		"too large":        strings.Replace(string(good), `{`, `{"message":"`+strings.Repeat(" ", errreport.MaxReportBytes)+`",`, 1),
	} {
		if _, err := errreport.Decode([]byte(data)); err == nil {
			t.Errorf("Decode(%s) = nil error, want a refusal", name)
		} else if p, ok := errors.AsType[*problem.Error](err); !ok || p.Kind == problem.Internal {
			t.Errorf("Decode(%s) error %v is not a client problem", name, err)
		}
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	prev := ""
	for i := range 1000 {
		id := errreport.NewID(at.Add(time.Duration(i) * time.Millisecond))
		if !errreport.ValidID(id) {
			t.Fatalf("NewID = %q, not a valid ID", id)
		}
		if seen[id] || id <= prev {
			t.Fatalf("NewID = %q after %q: want unique and ascending with time", id, prev)
		}
		seen[id], prev = true, id
	}
	// The time part is the ULID encoding of the milliseconds.
	if got := errreport.NewID(time.UnixMilli(1469918176385))[:10]; got != "01ARYZ6S41" {
		t.Errorf("NewID(1469918176385 ms) time part = %s, want 01ARYZ6S41 (the ULID spec's example)", got)
	}
	if got := errreport.NewID(time.Unix(0, 0))[:10]; got != "0000000000" {
		t.Errorf("NewID(1970) time part = %s, want zeros", got)
	}
}

func TestText_TailAndClip(t *testing.T) {
	t.Parallel()
	if got, want := errreport.Text([]byte("a\r\nb\rc\x1b[31md\xffe\u202ef\tg\n")), "a\nb\nc\uFFFD[31md\uFFFDe\uFFFDf\tg\n"; got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
	var out []byte
	for i := range 2000 {
		out = append(out, []byte("line "+strings.Repeat("ü", i%7)+"\r\n")...)
	}
	out = append(out, "panic: the last line\x1b"...)
	tail := errreport.Tail(out)
	r := errreport.Report{ID: errreport.NewID(at), Kind: errreport.AppCrash, At: at, ImagePath: "apps/a/1", Signal: "SIGABRT", StderrTail: tail}
	if err := r.Validate(); err != nil {
		t.Errorf("report with Tail(out): %v", err)
	}
	if len(tail) > errreport.MaxStderrTailBytes || len(tail) < errreport.MaxStderrTailBytes-32 {
		t.Errorf("Tail = %d bytes, want nearly %d", len(tail), errreport.MaxStderrTailBytes)
	}
	if !strings.HasPrefix(tail, "line ") || !strings.HasSuffix(tail, "panic: the last line\uFFFD") {
		t.Errorf("Tail = %q..., want whole lines ending with the last one", tail[:20])
	}
	if got := errreport.Tail([]byte("short\n")); got != "short\n" {
		t.Errorf("Tail(short) = %q", got)
	}
	clipped := errreport.Clip(strings.Repeat("ü", 600), errreport.MaxMessageBytes)
	if len(clipped) > errreport.MaxMessageBytes || !utf8.ValidString(clipped) || len(clipped) < errreport.MaxMessageBytes-1 {
		t.Errorf("Clip = %d bytes valid %t, want at most %d, valid UTF-8", len(clipped), utf8.ValidString(clipped), errreport.MaxMessageBytes)
	}
}
