// Package errreport defines a device's error report: what failed (an application crash, a
// step of an update, an attestation, a capability the application was refused, the agent
// itself), when by the device's clock, and what ran. The device makes reports and queues
// them (internal/agent/errqueue); the security service stores them per device and shows
// them to the tenant.
//
// Both sides apply the one strict Validate: bounded sizes, valid UTF-8, no control
// characters but tab and newline in free text (a report ends up in a support engineer's
// terminal), fields that belong to another kind absent. The device checks before it queues,
// so a queued report is one the server accepts (rule 5; fuzzed by FuzzDecode). Report IDs
// are made on the device (NewID): a device retries an upload until the server acknowledges
// it, and the server stores a report ID once per device, so delivery is at-least-once and
// storage exactly-once.
//
// Pure types and functions, safe for concurrent use. The package imports nothing of the
// server: the device links it.
package errreport

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/problem"
)

// Kind is what failed.
type Kind string

// Kinds of reports.
const (
	// AppCrash: the application exited or was killed while it should have run.
	AppCrash Kind = "app_crash"
	// UpdateFailed: a step of an OS or application update failed; the device stays on, or
	// rolled back to, its previous image.
	UpdateFailed Kind = "update_failed"
	// AttestationRefused: the security service refused the device's attestation.
	AttestationRefused Kind = "attestation_refused"
	// CapabilityDenied: the application asked for a peripheral or network host its manifest
	// does not declare (rule 6).
	CapabilityDenied Kind = "capability_denied"
	// Agent: the device runtime itself, such as reports it had to drop.
	Agent Kind = "agent"
)

// Kinds lists every kind.
var Kinds = []Kind{AppCrash, UpdateFailed, AttestationRefused, CapabilityDenied, Agent}

// Step is the step of an update that failed.
type Step string

// Update steps, in the order an update runs them.
const (
	StepDownload Step = "download"
	StepVerify   Step = "verify"
	StepInstall  Step = "install"
	StepBoot     Step = "boot"
	StepHealth   Step = "health"
	StepAttest   Step = "attest"
)

// Steps lists every update step.
var Steps = []Step{StepDownload, StepVerify, StepInstall, StepBoot, StepHealth, StepAttest}

// Codes of the reports the agent makes about its own error queue.
const (
	// CodeQueueFull: the queue was full and dropped its oldest reports; Dropped counts them.
	CodeQueueFull = "queue_full"
	// CodeQueueCorrupt: unreadable queue files were moved aside.
	CodeQueueCorrupt = "queue_corrupt"
	// CodeReportRejected: the server refused a queued report; it was moved aside.
	CodeReportRejected = "report_rejected"
)

// Limits, in bytes.
const (
	MaxStderrTailBytes = 4 << 10 // the last lines of the application's standard error
	MaxMessageBytes    = 1 << 10
	MaxPathBytes       = 255 // image paths, targets, capabilities
	MaxVersionBytes    = 64
	MaxCodeBytes       = 64
	// MaxUptimeSeconds is a hundred years.
	MaxUptimeSeconds = 100 * 365 * 24 * 60 * 60
	// MaxBatch bounds the reports of one upload.
	MaxBatch = 100
	// MaxBatchBytes bounds the JSON body of one upload: MaxBatch reports of the largest
	// valid size, HTML-escaped as encoding/json writes them, fit (TestBatch_LargestFits).
	MaxBatchBytes = 4 << 20
)

// Report is one error report, as the device makes it. Fields after Message belong to one
// kind each and are absent on the others.
type Report struct {
	// ID is unique per device: a ULID (26 characters, Crockford base32, upper case; NewID
	// makes one) or a UUID (lower-case hex with dashes), in canonical spelling.
	ID   string `json:"id"`
	Kind Kind   `json:"kind"`
	// At is when it happened, by the device's clock.
	At time.Time `json:"at"`
	// ImagePath and ImageVersion name what ran: the application image for an app crash or
	// a capability denial, the running image for the other kinds (TUF target path,
	// apps/<name>/<version> or os/<name>/<version>).
	ImagePath    string `json:"image_path,omitempty"`
	ImageVersion string `json:"image_version,omitempty"`
	// Code is a stable snake_case reason (signature_invalid, below_floor, queue_full, ...).
	Code string `json:"code,omitempty"`
	// Message says what happened, for people; at most MaxMessageBytes.
	Message string `json:"message,omitempty"`

	// AppCrash: exactly one of ExitCode (0 to 255) and Signal ("SIGSEGV").
	ExitCode      *int   `json:"exit_code,omitempty"`
	Signal        string `json:"signal,omitempty"`
	UptimeSeconds int64  `json:"uptime_seconds,omitempty"`
	// StderrTail holds the last lines of standard error, at most MaxStderrTailBytes
	// (Tail makes one from raw output).
	StderrTail string `json:"stderr_tail,omitempty"`

	// UpdateFailed: the step that failed and the image being installed (none when the
	// assignment or the repository metadata was refused, at the verify step).
	Step   Step   `json:"step,omitempty"`
	Target string `json:"target,omitempty"`

	// CapabilityDenied: what the application asked for, "gpio:5", "host:example.com:443".
	Capability string `json:"capability,omitempty"`

	// Agent: how many reports the queue dropped (CodeQueueFull).
	Dropped int64 `json:"dropped,omitempty"`
}

// Batch is the body of an upload: up to MaxBatch reports.
type Batch struct {
	Reports []Report `json:"reports"`
}

// Accepted answers an upload: the IDs the server holds now, each once, in the order sent.
// The device deletes exactly these from its queue.
type Accepted struct {
	Accepted []string `json:"accepted"`
}

// Record is a report as the security service holds it.
type Record struct {
	DeviceID identity.DeviceID `json:"device_id"`
	// ReceivedAt is the server's time of the upload that first carried the report.
	ReceivedAt time.Time `json:"received_at"`
	Report     Report    `json:"report"`
}

var (
	ulidRE       = regexp.MustCompile(`^[0-7][0-9A-HJKMNP-TV-Z]{25}$`)
	uuidRE       = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	codeRE       = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	signalRE     = regexp.MustCompile(`^SIG[A-Z0-9+]{2,12}$`)
	capabilityRE = regexp.MustCompile(`^[a-z][a-z0-9_]*:[!-~]+$`)
	imagePathRE  = regexp.MustCompile(`^(apps|os)/[!-.0-~]+/[!-.0-~]+$`) // no "/" inside name or version
	versionRE    = regexp.MustCompile(`^[!-~]+$`)
)

// ValidID reports whether s is a report ID in canonical spelling.
func ValidID(s string) bool { return ulidRE.MatchString(s) || uuidRE.MatchString(s) }

// earliest is the first valid report time: a device without a set clock reports 1970.
var earliest = time.Unix(0, 0)

// Validate reports every problem of the report.
func (r Report) Validate() error {
	var v problem.Validation
	r.check(&v, "")
	return v.Err()
}

// Validate reports every problem of the batch; the field of each names its report
// (reports[3].kind).
func (b Batch) Validate() error {
	var v problem.Validation
	switch {
	case len(b.Reports) == 0:
		v.Add("reports", "reports_required", "reports must hold at least one report")
	case len(b.Reports) > MaxBatch:
		v.Add("reports", "too_many_reports", "reports may hold at most %d reports, not %d", MaxBatch, len(b.Reports))
	}
	for i, r := range b.Reports {
		r.check(&v, fmt.Sprintf("reports[%d].", i))
	}
	return v.Err()
}

// check adds the report's problems to v, each field prefixed.
func (r Report) check(v *problem.Validation, prefix string) {
	add := func(field, code, format string, args ...any) {
		who := "report"
		if ValidID(r.ID) {
			who = "report " + r.ID
		}
		v.Add(prefix+field, code, who+": "+format, args...)
	}
	if !ValidID(r.ID) {
		add("id", "invalid_report_id", "id must be a ULID (26 characters, upper-case Crockford base32) or a lower-case UUID")
	}
	switch {
	case r.At.IsZero():
		add("at", "at_required", "at must be the time of the failure (RFC 3339)")
	case r.At.Before(earliest) || r.At.Year() > 9999:
		add("at", "invalid_at", "at must be between 1970 and 9999")
	}
	checkImagePath(add, "image_path", r.ImagePath)
	checkToken(add, "image_version", r.ImageVersion, MaxVersionBytes, versionRE, "printable ASCII without spaces")
	checkToken(add, "code", r.Code, MaxCodeBytes, codeRE, "snake_case")
	checkText(add, "message", r.Message, MaxMessageBytes)

	crash, update, denied, agent := r.Kind == AppCrash, r.Kind == UpdateFailed, r.Kind == CapabilityDenied, r.Kind == Agent
	switch r.Kind {
	case AppCrash:
		if r.ImagePath == "" {
			add("image_path", "image_path_required", "an app_crash report names the application image that crashed")
		}
		if (r.ExitCode == nil) == (r.Signal == "") {
			add("exit_code", "exit_code_or_signal", "an app_crash report has exactly one of exit_code and signal")
		}
	case UpdateFailed:
		if r.Step == "" {
			add("step", "step_required", "an update_failed report names the step that failed")
		}
		// A refused assignment or repository metadata fails verification before any image
		// is chosen: only then may the target be missing (ATTACKS rows 9, 11 and 23).
		if r.Target == "" && r.Step != StepVerify {
			add("target", "target_required", "an update_failed report names the target being installed (all steps but verify)")
		}
	case CapabilityDenied:
		if r.Capability == "" {
			add("capability", "capability_required", "a capability_denied report names the capability asked for")
		}
	case AttestationRefused, Agent:
	case "":
		add("kind", "kind_required", "kind is required")
	default:
		add("kind", "invalid_kind", "kind must be one of %s", joinKinds())
	}

	// Fields of one kind only.
	if r.ExitCode != nil && (!crash || *r.ExitCode < 0 || *r.ExitCode > 255) {
		onlyOr(add, crash, "exit_code", "app_crash", "exit_code must be 0 to 255")
	}
	if r.Signal != "" && (!crash || !signalRE.MatchString(r.Signal)) {
		onlyOr(add, crash, "signal", "app_crash", `signal must be a signal name such as "SIGSEGV"`)
	}
	if r.UptimeSeconds != 0 && (!crash || r.UptimeSeconds < 0 || r.UptimeSeconds > MaxUptimeSeconds) {
		onlyOr(add, crash, "uptime_seconds", "app_crash", "uptime_seconds must be 0 to %d", int64(MaxUptimeSeconds))
	}
	if r.StderrTail != "" {
		if !crash {
			onlyOr(add, false, "stderr_tail", "app_crash", "")
		} else {
			checkText(add, "stderr_tail", r.StderrTail, MaxStderrTailBytes)
		}
	}
	if r.Step != "" && (!update || !validStep(r.Step)) {
		onlyOr(add, update, "step", "update_failed", "step must be one of %s", joinSteps())
	}
	if r.Target != "" {
		if !update {
			onlyOr(add, false, "target", "update_failed", "")
		} else {
			checkImagePath(add, "target", r.Target)
		}
	}
	if r.Capability != "" && (!denied || len(r.Capability) > MaxPathBytes || !capabilityRE.MatchString(r.Capability)) {
		onlyOr(add, denied, "capability", "capability_denied", `capability must be KIND:WHAT, such as "gpio:5" or "host:example.com:443", at most %d bytes`, MaxPathBytes)
	}
	if r.Dropped != 0 && (!agent || r.Dropped < 0) {
		onlyOr(add, agent, "dropped", "agent", "dropped must not be negative")
	}
}

type adder func(field, code, format string, args ...any)

// onlyOr reports a field that its kind does not have, or else a bad value.
func onlyOr(add adder, ownKind bool, field, kind, format string, args ...any) {
	if !ownKind {
		add(field, "field_not_allowed", "%s belongs to %s reports only", field, kind)
		return
	}
	add(field, "invalid_"+field, format, args...)
}

func checkImagePath(add adder, field, s string) {
	if s != "" && (len(s) > MaxPathBytes || !imagePathRE.MatchString(s) || strings.Contains(s, "/../") || strings.HasSuffix(s, "/..")) {
		add(field, "invalid_"+field, "%s must be an image path apps/<name>/<version> or os/<name>/<version>, at most %d bytes", field, MaxPathBytes)
	}
}

func checkToken(add adder, field, s string, limit int, re *regexp.Regexp, what string) {
	if s != "" && (len(s) > limit || !re.MatchString(s)) {
		add(field, "invalid_"+field, "%s must be %s, at most %d bytes", field, what, limit)
	}
}

func checkText(add adder, field, s string, limit int) {
	switch {
	case len(s) > limit:
		add(field, field+"_too_long", "%s must be at most %d bytes, not %d", field, limit, len(s))
	case !utf8.ValidString(s):
		add(field, "invalid_utf8", "%s must be valid UTF-8", field)
	case strings.ContainsFunc(s, forbidden):
		add(field, "control_character", "%s must not hold control characters other than tab and newline", field)
	}
}

// forbidden reports a rune a report's text must not hold: control characters other than
// tab and newline (terminal escapes, carriage returns that overwrite a line) and the
// bidirectional overrides that make text read differently than it is.
func forbidden(r rune) bool {
	if r == '\t' || r == '\n' {
		return false
	}
	return unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

func validStep(s Step) bool {
	for _, x := range Steps {
		if s == x {
			return true
		}
	}
	return false
}

func joinKinds() string {
	s := make([]string, len(Kinds))
	for i, k := range Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

func joinSteps() string {
	s := make([]string, len(Steps))
	for i, x := range Steps {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}

// MaxReportBytes bounds the JSON of one report as Decode reads it (a valid report is far
// smaller: TestBatch_LargestFits).
const MaxReportBytes = 64 << 10

// Decode strictly decodes one report (valid UTF-8, one JSON object, no unknown fields, no
// trailing data) and validates it. The error is a problem naming the field where it can.
func Decode(data []byte) (Report, error) {
	var r Report
	switch {
	case len(data) > MaxReportBytes:
		return r, problem.New(problem.TooLarge, "report_too_large", "a report must be at most %d bytes", MaxReportBytes)
	case !utf8.Valid(data):
		return r, problem.New(problem.Invalid, "invalid_utf8", "the report is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Report{}, &problem.Error{Kind: problem.Invalid, Code: "malformed_report", Detail: "the report is not a JSON report object", Err: err}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Report{}, problem.New(problem.Invalid, "trailing_data", "the report must be exactly one JSON object")
	}
	if err := r.Validate(); err != nil {
		return Report{}, err
	}
	return r, nil
}

// Encode returns the report's JSON, which Decode reads back to an equal report.
func Encode(r Report) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// crockford is the ULID alphabet.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a fresh ULID for a report made at now: 48 bits of milliseconds since 1970,
// then 80 random bits, so IDs sort by time and never repeat in practice.
func NewID(now time.Time) string {
	var b [16]byte
	ms := max(now.UnixMilli(), 0)
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+)
	// 128 bits in 26 characters of 5 bits; the first character holds the top 3 bits.
	var out [26]byte
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 |
		uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// Text makes a valid report text from arbitrary bytes, such as an application's output:
// invalid UTF-8 and forbidden characters become U+FFFD, a carriage return before a newline
// is dropped and any other becomes a newline.
func Text(b []byte) string {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.Map(func(r rune) rune {
		if forbidden(r) {
			return '\uFFFD'
		}
		return r
	}, s)
}

// Tail returns the last lines of out that fit StderrTail: Text of out, cut to at most
// MaxStderrTailBytes at the start of a line where one begins in the cut part.
func Tail(out []byte) string {
	// Text at worst halves its input (CR LF to LF), so the last 4*MaxStderrTailBytes bytes
	// hold the whole tail; the work stays bounded however much the application wrote.
	if len(out) > 4*MaxStderrTailBytes {
		out = out[len(out)-4*MaxStderrTailBytes:]
	}
	s := Text(out)
	if len(s) <= MaxStderrTailBytes {
		return s
	}
	cut := len(s) - MaxStderrTailBytes
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++
	}
	s = s[cut:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i+1 < len(s) {
		s = s[i+1:]
	}
	return s
}

// Clip returns Text of s cut to at most limit bytes at a character boundary, for Message.
func Clip(s string, limit int) string {
	s = Text([]byte(s))
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
