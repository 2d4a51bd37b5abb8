// Package updstate defines a device's update-state report: one step of an OS or application
// update as the device took it (assigned, downloading, installed on trial, committed,
// rolled back, failed, deferred), when by the device's clock, and for which TUF target. The
// agent makes reports and queues them on disk (internal/agent/updqueue); the security
// service keeps each device's latest state and a bounded history, and shows them to the
// tenant's support staff.
//
// Both sides apply the one strict Validate: bounded sizes, valid UTF-8, no control
// characters but tab and newline in the message, fields that belong to another state
// absent, each state's own fields present. The device checks before it queues, so a queued
// report is one the server accepts (rule 5; fuzzed by FuzzDecode). Report IDs are made on
// the device (errreport.NewID), and the server stores an ID once per device: delivery is
// at-least-once, storage exactly-once, as for error reports.
//
// A report names no device: the service files it under the device its client certificate
// names, so a device cannot report for another (rule 3; TestUpdateStates_StoredUnderCertificateDevice).
//
// Pure types and functions, safe for concurrent use. The package imports nothing of the
// server: the device links it.
package updstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/problem"
)

// State is a step of an update.
type State string

// States, in the order an update takes them; failed, rolled_back and deferred may end it
// at any point.
const (
	// Assigned: the device saw a new assignment naming the target.
	Assigned State = "assigned"
	// Downloading: the device is fetching the target; BytesDone of BytesTotal arrived.
	Downloading State = "downloading"
	// Installed: the target is in the inactive slot on trial, awaiting its boot and health
	// check.
	Installed State = "installed"
	// Committed: the target proved healthy and is the device's active image.
	Committed State = "committed"
	// RolledBack: the target failed on trial and the device went back to its previous
	// image; Code says why.
	RolledBack State = "rolled_back"
	// Failed: a step failed before the target ran (download, verification, install); the
	// device keeps its running image. Code says why.
	Failed State = "failed"
	// Deferred: the device postponed the update until DeferredUntil.
	Deferred State = "deferred"
)

// States lists every state.
var States = []State{Assigned, Downloading, Installed, Committed, RolledBack, Failed, Deferred}

// Valid reports whether s is one of States.
func (s State) Valid() bool {
	for _, x := range States {
		if s == x {
			return true
		}
	}
	return false
}

// Failure reports whether s ends an update without the target running: failed or
// rolled_back (what fleet status counts as failed).
func (s State) Failure() bool { return s == Failed || s == RolledBack }

// Kinds of image.
const (
	KindOS  = "os"
	KindApp = "app"
)

// Limits.
const (
	MaxMessageBytes = errreport.MaxMessageBytes
	MaxTargetBytes  = errreport.MaxPathBytes
	MaxVersionBytes = errreport.MaxVersionBytes
	MaxCodeBytes    = errreport.MaxCodeBytes
	// MaxBatch bounds the reports of one upload.
	MaxBatch = 100
	// MaxReportBytes bounds the JSON of one report as Decode reads it (a valid report is
	// far smaller: TestBatch_LargestFits).
	MaxReportBytes = 16 << 10
	// MaxBatchBytes bounds the JSON body of one upload: MaxBatch reports of the largest
	// valid size, HTML-escaped as encoding/json writes them, fit (TestBatch_LargestFits).
	MaxBatchBytes = 1 << 20
)

// Report is one update step, as the device reports it. Fields after Version belong to
// some states only and are absent on the others.
type Report struct {
	// ID is unique per device: a ULID or a UUID in canonical spelling (errreport.ValidID).
	ID string `json:"id"`
	// At is when the device took the step, by its clock.
	At    time.Time `json:"at"`
	State State     `json:"state"`
	// Kind is the image's kind, "os" or "app".
	Kind string `json:"kind"`
	// Target is the TUF target path being installed, os/<name>/<version> or
	// apps/<name>/<version>, of Kind.
	Target  string `json:"target"`
	Version string `json:"version,omitempty"`

	// Downloading: bytes of the target arrived, of its length (BytesTotal > 0).
	BytesDone  int64 `json:"bytes_done,omitempty"`
	BytesTotal int64 `json:"bytes_total,omitempty"`
	// Failed and rolled_back (required), deferred (optional): a stable snake_case reason
	// (download_failed, health_check_failed, ...) and a message for people.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// Deferred: until when the device postponed the update.
	DeferredUntil *time.Time `json:"deferred_until,omitempty"`
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
	codeRE    = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	targetRE  = regexp.MustCompile(`^(apps|os)/[!-.0-~]+/[!-.0-~]+$`) // no "/" inside name or version
	versionRE = regexp.MustCompile(`^[!-~]+$`)
)

// earliest is the first valid report time: a device without a set clock reports 1970.
var earliest = time.Unix(0, 0)

// Validate reports every problem of the report.
func (r Report) Validate() error {
	var v problem.Validation
	r.check(&v, "")
	return v.Err()
}

// Validate reports every problem of the batch; the field of each names its report
// (reports[3].state).
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

type adder func(field, code, format string, args ...any)

// check adds the report's problems to v, each field prefixed.
func (r Report) check(v *problem.Validation, prefix string) {
	add := func(field, code, format string, args ...any) {
		who := "update state"
		if errreport.ValidID(r.ID) {
			who = "update state " + r.ID
		}
		v.Add(prefix+field, code, who+": "+format, args...)
	}
	if !errreport.ValidID(r.ID) {
		add("id", "invalid_report_id", "id must be a ULID (26 characters, upper-case Crockford base32) or a lower-case UUID")
	}
	checkTime(add, "at", r.At)
	switch {
	case r.State == "":
		add("state", "state_required", "state is required")
	case !r.State.Valid():
		add("state", "invalid_state", "state must be one of %s", joinStates())
	}
	r.checkTarget(add)
	if r.Version != "" && (len(r.Version) > MaxVersionBytes || !versionRE.MatchString(r.Version)) {
		add("version", "invalid_version", "version must be printable ASCII without spaces, at most %d bytes", MaxVersionBytes)
	}
	r.checkBytes(add)
	r.checkReason(add)
	switch {
	case r.DeferredUntil != nil && r.State != Deferred:
		notAllowed(add, "deferred_until", "deferred")
	case r.DeferredUntil != nil:
		checkTime(add, "deferred_until", *r.DeferredUntil)
	case r.State == Deferred:
		add("deferred_until", "deferred_until_required", "a deferred report says until when (deferred_until)")
	}
}

func (r Report) checkTarget(add adder) {
	prefix := ""
	switch r.Kind {
	case KindOS:
		prefix = "os/"
	case KindApp:
		prefix = "apps/"
	case "":
		add("kind", "kind_required", `kind is required ("os" or "app")`)
	default:
		add("kind", "invalid_kind", `kind must be "os" or "app"`)
	}
	switch {
	case r.Target == "":
		add("target", "target_required", "target names the TUF target path being installed")
	case len(r.Target) > MaxTargetBytes || !targetRE.MatchString(r.Target) || strings.Contains(r.Target, "/../") || strings.HasSuffix(r.Target, "/.."):
		add("target", "invalid_target", "target must be a target path apps/<name>/<version> or os/<name>/<version>, at most %d bytes", MaxTargetBytes)
	case prefix != "" && !strings.HasPrefix(r.Target, prefix):
		add("target", "target_kind_mismatch", "an %s report's target starts with %q", r.Kind, prefix)
	}
}

func (r Report) checkBytes(add adder) {
	if r.State != Downloading {
		if r.BytesDone != 0 {
			notAllowed(add, "bytes_done", "downloading")
		}
		if r.BytesTotal != 0 {
			notAllowed(add, "bytes_total", "downloading")
		}
		return
	}
	if r.BytesTotal <= 0 {
		add("bytes_total", "bytes_total_required", "a downloading report gives the target's length (bytes_total > 0)")
	}
	if r.BytesDone < 0 || (r.BytesTotal > 0 && r.BytesDone > r.BytesTotal) {
		add("bytes_done", "invalid_bytes_done", "bytes_done must be 0 to bytes_total")
	}
}

func (r Report) checkReason(add adder) {
	failure, deferred := r.State.Failure(), r.State == Deferred
	switch {
	case r.Code == "" && failure:
		add("code", "code_required", "a %s report gives its reason (code)", r.State)
	case r.Code != "" && !failure && !deferred:
		notAllowed(add, "code", "failed, rolled_back and deferred")
	case r.Code != "" && (len(r.Code) > MaxCodeBytes || !codeRE.MatchString(r.Code)):
		add("code", "invalid_code", "code must be snake_case, at most %d bytes", MaxCodeBytes)
	}
	switch {
	case r.Message == "":
	case !failure && !deferred:
		notAllowed(add, "message", "failed, rolled_back and deferred")
	case len(r.Message) > MaxMessageBytes:
		add("message", "message_too_long", "message must be at most %d bytes, not %d", MaxMessageBytes, len(r.Message))
	case !utf8.ValidString(r.Message):
		add("message", "invalid_utf8", "message must be valid UTF-8")
	case errreport.Text([]byte(r.Message)) != r.Message:
		// Text replaces exactly the characters a report must not hold (terminal escapes,
		// carriage returns, bidirectional overrides): a message it changes holds one.
		add("message", "control_character", "message must not hold control characters other than tab and newline")
	}
}

func checkTime(add adder, field string, t time.Time) {
	switch {
	case t.IsZero():
		add(field, field+"_required", "%s must be a time (RFC 3339)", field)
	case t.Before(earliest) || t.Year() > 9999:
		add(field, "invalid_"+field, "%s must be between 1970 and 9999", field)
	}
}

func notAllowed(add adder, field, states string) {
	add(field, "field_not_allowed", "%s belongs to %s reports only", field, states)
}

func joinStates() string {
	s := make([]string, len(States))
	for i, x := range States {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}

// Decode strictly decodes one report (valid UTF-8, one JSON object, no unknown fields, no
// trailing data) and validates it. The error is a problem naming the field where it can.
func Decode(data []byte) (Report, error) {
	var r Report
	switch {
	case len(data) > MaxReportBytes:
		return r, problem.New(problem.TooLarge, "report_too_large", "an update state must be at most %d bytes", MaxReportBytes)
	case !utf8.Valid(data):
		return r, problem.New(problem.Invalid, "invalid_utf8", "the update state is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Report{}, &problem.Error{Kind: problem.Invalid, Code: "malformed_report", Detail: "the update state is not a JSON update-state object", Err: err}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Report{}, problem.New(problem.Invalid, "trailing_data", "the update state must be exactly one JSON object")
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

// Newer reports whether a is newer than b by (At, ID), the order the service keeps the
// latest state by: a report that arrives late never replaces a newer one.
func Newer(a, b Report) bool {
	if !a.At.Equal(b.At) {
		return a.At.After(b.At)
	}
	return a.ID > b.ID
}
