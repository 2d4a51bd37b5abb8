package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/problem"
)

// Limits.
const (
	// MaxPayloadBytes bounds a telemetry or event payload.
	MaxPayloadBytes = 8 << 10
	// MaxReplyBytes bounds a diagnostics reply (it carries the app's result).
	MaxReplyBytes = 32 << 10
	// MaxRequestBytes bounds a diagnostics request.
	MaxRequestBytes = 8 << 10
	// MaxReadings bounds the readings of one payload.
	MaxReadings = 32
	// MaxArgsBytes bounds a request's arguments, MaxResultBytes a reply's result (JSON).
	MaxArgsBytes   = 4 << 10
	MaxResultBytes = 16 << 10
	// MaxMessageBytes bounds an event's message and a reply's error.
	MaxMessageBytes = 1 << 10
	// maxDepth bounds the nesting of args and results.
	maxDepth = 16
)

var (
	nameRE    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	unitRE    = regexp.MustCompile(`^[A-Za-z0-9%./_\[\]-]{1,16}$`)
	cycleRE   = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
	commandRE = regexp.MustCompile(`^[A-Za-z0-9_./-]{1,64}$`)
)

// ValidName reports whether s may name a reading, a phase or an event: a lower-case
// letter, then up to 63 lower-case letters, digits or '_'.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ValidCommand reports whether s may name a diagnostics command (the app's diagnostic):
// 1 to 64 letters, digits, '_', '.', '/' or '-'.
func ValidCommand(s string) bool { return commandRE.MatchString(s) }

// Reading is one measured value with its unit (UCUM spelling: "Cel", "%", "L", "kW.h").
type Reading struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Telemetry is what a device publishes on its telemetry topic: readings taken at one time,
// optionally within a work cycle (a wash cycle) and one of its phases.
type Telemetry struct {
	V    int       `json:"v"`
	Time time.Time `json:"time"`
	// Cycle, optional, names the cycle the readings belong to; the cloud summarizes per
	// cycle.
	Cycle string `json:"cycle,omitempty"`
	// Phase, optional, is the cycle's phase ("heat", "wash", "rinse", "drying"); the
	// fleet-relative rules compare devices at the same phase.
	Phase    string             `json:"phase,omitempty"`
	Readings map[string]Reading `json:"readings"`
}

// Event is what a device publishes on its events topic: something that happened, with
// optional figures (a cycle that ended, with the water and energy it used).
type Event struct {
	V        int                `json:"v"`
	Time     time.Time          `json:"time"`
	Name     string             `json:"name"`
	Cycle    string             `json:"cycle,omitempty"`
	Readings map[string]Reading `json:"readings,omitempty"`
	Message  string             `json:"message,omitempty"`
}

// DiagnosticRequest is what the cloud publishes on a device's diagnostics topic.
type DiagnosticRequest struct {
	V  int    `json:"v"`
	ID string `json:"id"`
	// Command names the app's diagnostic ("heater-self-test").
	Command string `json:"command"`
	// Args, optional, is one JSON value for the app.
	Args json.RawMessage `json:"args,omitempty"`
	// Deadline is when the cloud stops waiting; a device does not start a request past it.
	Deadline time.Time `json:"deadline"`
}

// DiagnosticReply is the device's answer, on the request's reply topic.
type DiagnosticReply struct {
	V  int    `json:"v"`
	ID string `json:"id"`
	OK bool   `json:"ok"`
	// Result is the app's answer when OK (one JSON value), Error its words otherwise.
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	// At is when the device finished, by its clock.
	At time.Time `json:"at"`
}

// Validate reports every problem of t.
func (t Telemetry) Validate() error {
	var v problem.Validation
	checkHead(&v, t.V, t.Time)
	checkCycle(&v, t.Cycle)
	if t.Phase != "" && !ValidName(t.Phase) {
		v.Add("phase", "invalid_phase", "phase must be a lower-case letter, then up to 63 lower-case letters, digits or '_'")
	}
	if len(t.Readings) == 0 {
		v.Add("readings", "readings_required", "readings must hold at least one reading")
	}
	checkReadings(&v, t.Readings)
	return v.Err()
}

// Validate reports every problem of e.
func (e Event) Validate() error {
	var v problem.Validation
	checkHead(&v, e.V, e.Time)
	if !ValidName(e.Name) {
		v.Add("name", "invalid_event_name", "name must be a lower-case letter, then up to 63 lower-case letters, digits or '_'")
	}
	checkCycle(&v, e.Cycle)
	checkReadings(&v, e.Readings)
	checkText(&v, "message", e.Message, MaxMessageBytes)
	return v.Err()
}

// Validate reports every problem of r.
func (r DiagnosticRequest) Validate() error {
	var v problem.Validation
	checkHead(&v, r.V, r.Deadline)
	if !ValidRequestID(r.ID) {
		v.Add("id", "invalid_request_id", "id must be 1 to 64 letters, digits, '_' or '-'")
	}
	if !ValidCommand(r.Command) {
		v.Add("command", "invalid_command", "command must be 1 to 64 letters, digits, '_', '.', '/' or '-'")
	}
	checkJSON(&v, "args", r.Args, MaxArgsBytes)
	return v.Err()
}

// Validate reports every problem of r.
func (r DiagnosticReply) Validate() error {
	var v problem.Validation
	checkHead(&v, r.V, r.At)
	if !ValidRequestID(r.ID) {
		v.Add("id", "invalid_request_id", "id must be 1 to 64 letters, digits, '_' or '-'")
	}
	checkJSON(&v, "result", r.Result, MaxResultBytes)
	checkText(&v, "error", r.Error, MaxMessageBytes)
	switch {
	case r.OK && r.Error != "":
		v.Add("error", "error_with_ok", "error must be absent when ok is true")
	case !r.OK && r.Error == "":
		v.Add("error", "error_required", "error is required when ok is false")
	case !r.OK && len(r.Result) != 0:
		v.Add("result", "result_without_ok", "result must be absent when ok is false")
	}
	return v.Err()
}

// earliest and latest bound every time: a device without a set clock says 1970.
var (
	earliest = time.Unix(0, 0).UTC()
	latest   = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

func checkHead(v *problem.Validation, version int, t time.Time) {
	if version != Version {
		v.Add("v", "unsupported_version", "v must be %d", Version)
	}
	if t.Before(earliest) || t.After(latest) {
		v.Add("time", "invalid_time", "time must be an RFC 3339 time from 1970 to 9999")
	}
}

func checkCycle(v *problem.Validation, c string) {
	if c != "" && !cycleRE.MatchString(c) {
		v.Add("cycle", "invalid_cycle", "cycle must be 1 to 64 letters, digits, '_', '.', ':' or '-'")
	}
}

func checkReadings(v *problem.Validation, rs map[string]Reading) {
	if len(rs) > MaxReadings {
		v.Add("readings", "too_many_readings", "readings may hold at most %d readings, not %d", MaxReadings, len(rs))
		return
	}
	names := make([]string, 0, len(rs))
	for n := range rs {
		names = append(names, n)
	}
	sort.Strings(names) // problems in a stable order
	for _, n := range names {
		r := rs[n]
		if !ValidName(n) {
			v.Add("readings", "invalid_reading_name", "reading names must be a lower-case letter, then up to 63 lower-case letters, digits or '_'")
			continue
		}
		if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
			v.Add("readings."+n+".value", "invalid_value", "value must be a finite number")
		}
		if !unitRE.MatchString(r.Unit) {
			v.Add("readings."+n+".unit", "invalid_unit", "unit must be 1 to 16 letters, digits or %%./_[]- (UCUM: Cel, %%, L, kW.h)")
		}
	}
}

func checkText(v *problem.Validation, field, s string, max int) {
	switch {
	case len(s) > max:
		v.Add(field, "too_long", "%s may be at most %d bytes", field, max)
	case !utf8.ValidString(s):
		v.Add(field, "invalid_utf8", "%s must be valid UTF-8", field)
	default:
		for _, r := range s {
			if r < 0x20 && r != '\t' && r != '\n' || r == 0x7f {
				v.Add(field, "control_character", "%s may hold no control characters but tab and newline", field)
				return
			}
		}
	}
}

func checkJSON(v *problem.Validation, field string, raw json.RawMessage, max int) {
	if len(raw) == 0 {
		return
	}
	if len(raw) > max {
		v.Add(field, "too_large", "%s may be at most %d bytes of JSON", field, max)
		return
	}
	if err := checkStrictJSON(raw, false); err != nil {
		v.Add(field, "invalid_json", "%s must be one JSON value without duplicate keys, nested at most %d deep", field, maxDepth)
	}
}

// DecodeTelemetry reads a telemetry payload.
func DecodeTelemetry(data []byte) (Telemetry, error) {
	var t Telemetry
	if err := decode(data, MaxPayloadBytes, "telemetry", &t); err != nil {
		return Telemetry{}, err
	}
	return t, t.Validate()
}

// DecodeEvent reads an event payload.
func DecodeEvent(data []byte) (Event, error) {
	var e Event
	if err := decode(data, MaxPayloadBytes, "event", &e); err != nil {
		return Event{}, err
	}
	return e, e.Validate()
}

// DecodeRequest reads a diagnostics request.
func DecodeRequest(data []byte) (DiagnosticRequest, error) {
	var r DiagnosticRequest
	if err := decode(data, MaxRequestBytes, "diagnostics request", &r); err != nil {
		return DiagnosticRequest{}, err
	}
	return r, r.Validate()
}

// DecodeReply reads a diagnostics reply.
func DecodeReply(data []byte) (DiagnosticReply, error) {
	var r DiagnosticReply
	if err := decode(data, MaxReplyBytes, "diagnostics reply", &r); err != nil {
		return DiagnosticReply{}, err
	}
	return r, r.Validate()
}

// Encode returns the JSON of a payload (*Telemetry, *Event, *DiagnosticRequest,
// *DiagnosticReply or their values) after validating it; the matching Decode reads it back
// to an equal value.
func Encode(p interface{ Validate() error }) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	// Without HTML escaping: json.Marshal writes '<', '>' and '&' as six bytes each, so a
	// valid message or result could encode past the payload limit the cloud enforces
	// (TestEncode_StaysWithinLimits).
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func decode(data []byte, max int, what string, into any) error {
	switch {
	case len(data) == 0:
		return problem.New(problem.Invalid, "empty_payload", "the %s payload is empty", what)
	case len(data) > max:
		return problem.New(problem.TooLarge, "payload_too_large", "a %s payload must be at most %d bytes, not %d", what, max, len(data))
	case data[0] >= 0xa0 && data[0] <= 0xbf:
		return problem.New(problem.Invalid, "unsupported_encoding", "the %s payload is a CBOR map; only JSON is accepted in version %d", what, Version)
	case !utf8.Valid(data):
		return problem.New(problem.Invalid, "invalid_utf8", "the %s payload is not valid UTF-8", what)
	}
	if err := checkStrictJSON(data, true); err != nil {
		return &problem.Error{Kind: problem.Invalid, Code: "malformed_payload", Detail: fmt.Sprintf("the %s payload is not one JSON object without duplicate keys", what), Err: err}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return &problem.Error{Kind: problem.Invalid, Code: "malformed_payload", Detail: fmt.Sprintf("the %s payload is not a version %d %s object: %v", what, Version, what, err), Err: err}
	}
	return nil
}

// errDuplicate and errDepth are checkStrictJSON's findings.
var (
	errDuplicate = errors.New("duplicate key")
	errDepth     = errors.New("nested too deep")
	errTrailing  = errors.New("data after the value")
	errKeyCase   = errors.New("field name not in lower case")
)

// checkStrictJSON checks that data is exactly one JSON value whose objects have no
// duplicate keys and whose nesting is at most maxDepth: encoding/json silently keeps the
// last of duplicate keys, so two readers could see two payloads in one message.
//
// In a payload (not in args or results, which are the app's own JSON), the keys of the
// payload object and of its readings must be lower-case ASCII: encoding/json matches
// field names without regard to case (and folds 'K', U+212A, to 'k'), so {"ok":false,
// "OK":true} would otherwise be one payload to Go and another to a strict reader
// (FuzzDecodeReply found it; TestDecode_Refuses/*/field name case attacks it).
func checkStrictJSON(data []byte, payload bool) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walk(dec, 0, payload); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errTrailing
	}
	return nil
}

// walk checks one value; lower requires its object keys (and those of objects under
// it) to be lower-case ASCII. In a payload that is the payload object and its readings.
func walk(dec *json.Decoder, depth int, lower bool) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= maxDepth {
		return errDepth
	}
	switch d {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := k.(string)
			if seen[key] {
				return fmt.Errorf("%w %q", errDuplicate, key)
			}
			seen[key] = true
			if lower && !lowerKey(key) {
				return fmt.Errorf("%w: %q", errKeyCase, key)
			}
			if err := walk(dec, depth+1, lower && (depth > 0 || key == "readings")); err != nil {
				return err
			}
		}
	case '[':
		for dec.More() {
			if err := walk(dec, depth+1, false); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

func lowerKey(k string) bool {
	for i := 0; i < len(k); i++ {
		if c := k[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
