package telemetry_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/telemetry"
)

var at = time.Date(2026, 7, 1, 12, 30, 0, 123456789, time.UTC)

// codes returns the problem codes of err: its Code and those of its fields.
func codes(err error) []string {
	pe, ok := errors.AsType[*problem.Error](err)
	if !ok {
		return nil
	}
	out := []string{pe.Code}
	for _, f := range pe.Fields {
		out = append(out, f.Code)
	}
	return out
}

func wantCode(t *testing.T, call string, err error, code string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s = nil, want %s", call, code)
		return
	}
	if !slices.Contains(codes(err), code) {
		t.Errorf("%s = %v (codes %v), want %s", call, err, codes(err), code)
	}
}

func goodTelemetry() telemetry.Telemetry {
	return telemetry.Telemetry{V: 1, Time: at, Cycle: "c-2026.07.01:1", Phase: "drying",
		Readings: map[string]telemetry.Reading{"drying_temp": {Value: 68.5, Unit: "Cel"}, "rinse_level": {Value: 40, Unit: "%"}}}
}

func TestTelemetry_Validate(t *testing.T) {
	t.Parallel()
	many := map[string]telemetry.Reading{}
	for i := range telemetry.MaxReadings + 1 {
		many[fmt.Sprintf("r%d", i)] = telemetry.Reading{Value: 1, Unit: "Cel"}
	}
	exactly := map[string]telemetry.Reading{}
	for i := range telemetry.MaxReadings {
		exactly[fmt.Sprintf("r%d", i)] = telemetry.Reading{Value: 1, Unit: "Cel"}
	}
	tests := []struct {
		name   string
		change func(*telemetry.Telemetry)
		code   string // "" for valid
	}{
		{"valid", func(*telemetry.Telemetry) {}, ""},
		{"no cycle or phase", func(x *telemetry.Telemetry) { x.Cycle, x.Phase = "", "" }, ""},
		{"max readings", func(x *telemetry.Telemetry) { x.Readings = exactly }, ""},
		{"epoch", func(x *telemetry.Telemetry) { x.Time = time.Unix(0, 0) }, ""},
		{"huge value", func(x *telemetry.Telemetry) { x.Readings["big"] = telemetry.Reading{Value: 1.7e308, Unit: "W"} }, ""},
		{"unit alphabet", func(x *telemetry.Telemetry) { x.Readings["e"] = telemetry.Reading{Value: 1, Unit: "kW.h/[m3]-%_"} }, ""},
		{"version 0", func(x *telemetry.Telemetry) { x.V = 0 }, "unsupported_version"},
		{"version 2", func(x *telemetry.Telemetry) { x.V = 2 }, "unsupported_version"},
		{"zero time", func(x *telemetry.Telemetry) { x.Time = time.Time{} }, "invalid_time"},
		{"before 1970", func(x *telemetry.Telemetry) { x.Time = time.Unix(-1, 0) }, "invalid_time"},
		{"after 9999", func(x *telemetry.Telemetry) { x.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "invalid_time"},
		{"cycle with space", func(x *telemetry.Telemetry) { x.Cycle = "a b" }, "invalid_cycle"},
		{"cycle too long", func(x *telemetry.Telemetry) { x.Cycle = strings.Repeat("c", 65) }, "invalid_cycle"},
		{"phase upper case", func(x *telemetry.Telemetry) { x.Phase = "Drying" }, "invalid_phase"},
		{"phase starts with digit", func(x *telemetry.Telemetry) { x.Phase = "1st" }, "invalid_phase"},
		{"no readings", func(x *telemetry.Telemetry) { x.Readings = nil }, "readings_required"},
		{"too many readings", func(x *telemetry.Telemetry) { x.Readings = many }, "too_many_readings"},
		{"reading name upper case", func(x *telemetry.Telemetry) { x.Readings["Temp"] = telemetry.Reading{Value: 1, Unit: "Cel"} }, "invalid_reading_name"},
		{"reading name too long", func(x *telemetry.Telemetry) {
			x.Readings["a"+strings.Repeat("b", 64)] = telemetry.Reading{Value: 1, Unit: "Cel"}
		}, "invalid_reading_name"},
		{"reading name empty", func(x *telemetry.Telemetry) { x.Readings[""] = telemetry.Reading{Value: 1, Unit: "Cel"} }, "invalid_reading_name"},
		{"NaN", func(x *telemetry.Telemetry) { x.Readings["n"] = telemetry.Reading{Value: nan(), Unit: "Cel"} }, "invalid_value"},
		{"+Inf", func(x *telemetry.Telemetry) { x.Readings["n"] = telemetry.Reading{Value: inf(1), Unit: "Cel"} }, "invalid_value"},
		{"-Inf", func(x *telemetry.Telemetry) { x.Readings["n"] = telemetry.Reading{Value: inf(-1), Unit: "Cel"} }, "invalid_value"},
		{"empty unit", func(x *telemetry.Telemetry) { x.Readings["u"] = telemetry.Reading{Value: 1} }, "invalid_unit"},
		{"unit too long", func(x *telemetry.Telemetry) {
			x.Readings["u"] = telemetry.Reading{Value: 1, Unit: strings.Repeat("m", 17)}
		}, "invalid_unit"},
		{"unit with space", func(x *telemetry.Telemetry) { x.Readings["u"] = telemetry.Reading{Value: 1, Unit: "deg C"} }, "invalid_unit"},
		{"unit with degree sign", func(x *telemetry.Telemetry) { x.Readings["u"] = telemetry.Reading{Value: 1, Unit: "°C"} }, "invalid_unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := goodTelemetry()
			tt.change(&x)
			err := x.Validate()
			if tt.code == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			wantCode(t, "Validate()", err, tt.code)
			if _, err := telemetry.Encode(x); err == nil {
				t.Errorf("Encode(invalid) = nil error")
			}
		})
	}
}

func TestTelemetry_ValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	x := telemetry.Telemetry{V: 9, Cycle: "a b", Phase: "X", Readings: map[string]telemetry.Reading{"t": {Value: nan()}}}
	got := codes(x.Validate())
	for _, c := range []string{"unsupported_version", "invalid_time", "invalid_cycle", "invalid_phase", "invalid_value", "invalid_unit"} {
		if !slices.Contains(got, c) {
			t.Errorf("Validate() codes = %v, missing %s", got, c)
		}
	}
}

func TestEvent_Validate(t *testing.T) {
	t.Parallel()
	good := func() telemetry.Event {
		return telemetry.Event{V: 1, Time: at, Name: "cycle_end", Cycle: "c1", Message: "done\twell\nthanks",
			Readings: map[string]telemetry.Reading{"water": {Value: 9.5, Unit: "L"}}}
	}
	tests := []struct {
		name   string
		change func(*telemetry.Event)
		code   string
	}{
		{"valid", func(*telemetry.Event) {}, ""},
		{"no readings", func(e *telemetry.Event) { e.Readings = nil }, ""},
		{"max message", func(e *telemetry.Event) { e.Message = strings.Repeat("é", telemetry.MaxMessageBytes/2) }, ""},
		{"version", func(e *telemetry.Event) { e.V = 2 }, "unsupported_version"},
		{"time", func(e *telemetry.Event) { e.Time = time.Time{} }, "invalid_time"},
		{"no name", func(e *telemetry.Event) { e.Name = "" }, "invalid_event_name"},
		{"name with dash", func(e *telemetry.Event) { e.Name = "cycle-end" }, "invalid_event_name"},
		{"cycle", func(e *telemetry.Event) { e.Cycle = "c/1" }, "invalid_cycle"},
		{"reading", func(e *telemetry.Event) { e.Readings["w"] = telemetry.Reading{Value: inf(1), Unit: "L"} }, "invalid_value"},
		{"message too long", func(e *telemetry.Event) { e.Message = strings.Repeat("m", telemetry.MaxMessageBytes+1) }, "too_long"},
		{"message bad UTF-8", func(e *telemetry.Event) { e.Message = "a\xffb" }, "invalid_utf8"},
		{"message NUL", func(e *telemetry.Event) { e.Message = "a\x00b" }, "control_character"},
		{"message escape", func(e *telemetry.Event) { e.Message = "\x1b[31mred" }, "control_character"},
		{"message DEL", func(e *telemetry.Event) { e.Message = "a\x7f" }, "control_character"},
		{"message CR", func(e *telemetry.Event) { e.Message = "a\rb" }, "control_character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := good()
			tt.change(&e)
			err := e.Validate()
			if tt.code == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			wantCode(t, "Validate()", err, tt.code)
		})
	}
}

func goodRequest() telemetry.DiagnosticRequest {
	return telemetry.DiagnosticRequest{V: 1, ID: "req_01-AB", Command: "heater-self-test", Args: json.RawMessage(`{"watts":1800,"steps":[1,2]}`), Deadline: at}
}

func TestDiagnosticRequest_Validate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*telemetry.DiagnosticRequest)
		code   string
	}{
		{"valid", func(*telemetry.DiagnosticRequest) {}, ""},
		{"no args", func(r *telemetry.DiagnosticRequest) { r.Args = nil }, ""},
		{"scalar args", func(r *telemetry.DiagnosticRequest) { r.Args = json.RawMessage(`"x"`) }, ""},
		{"command with path", func(r *telemetry.DiagnosticRequest) { r.Command = "heater/self.test_2" }, ""},
		{"version", func(r *telemetry.DiagnosticRequest) { r.V = 0 }, "unsupported_version"},
		{"deadline", func(r *telemetry.DiagnosticRequest) { r.Deadline = time.Time{} }, "invalid_time"},
		{"no id", func(r *telemetry.DiagnosticRequest) { r.ID = "" }, "invalid_request_id"},
		{"id with dot", func(r *telemetry.DiagnosticRequest) { r.ID = "a.b" }, "invalid_request_id"},
		{"id wildcard", func(r *telemetry.DiagnosticRequest) { r.ID = "#" }, "invalid_request_id"},
		{"id too long", func(r *telemetry.DiagnosticRequest) { r.ID = strings.Repeat("i", 65) }, "invalid_request_id"},
		{"no command", func(r *telemetry.DiagnosticRequest) { r.Command = "" }, "invalid_command"},
		{"command with space", func(r *telemetry.DiagnosticRequest) { r.Command = "rm -rf" }, "invalid_command"},
		{"args too large", func(r *telemetry.DiagnosticRequest) {
			r.Args = json.RawMessage(`"` + strings.Repeat("a", telemetry.MaxArgsBytes) + `"`)
		}, "too_large"},
		{"args not JSON", func(r *telemetry.DiagnosticRequest) { r.Args = json.RawMessage(`{`) }, "invalid_json"},
		{"args duplicate key", func(r *telemetry.DiagnosticRequest) { r.Args = json.RawMessage(`{"a":1,"a":2}`) }, "invalid_json"},
		{"args deep duplicate key", func(r *telemetry.DiagnosticRequest) {
			r.Args = json.RawMessage(`{"a":[{"b":{"c":1,"c":2}}]}`)
		}, "invalid_json"},
		{"args two values", func(r *telemetry.DiagnosticRequest) { r.Args = json.RawMessage(`1 2`) }, "invalid_json"},
		{"args too deep", func(r *telemetry.DiagnosticRequest) {
			r.Args = json.RawMessage(strings.Repeat("[", 17) + strings.Repeat("]", 17))
		}, "invalid_json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := goodRequest()
			tt.change(&r)
			err := r.Validate()
			if tt.code == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			wantCode(t, "Validate()", err, tt.code)
		})
	}
}

func TestDiagnosticReply_Validate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    telemetry.DiagnosticReply
		code string
	}{
		{"ok with result", telemetry.DiagnosticReply{V: 1, ID: "r1", OK: true, Result: json.RawMessage(`{"ohms":24}`), At: at}, ""},
		{"ok without result", telemetry.DiagnosticReply{V: 1, ID: "r1", OK: true, At: at}, ""},
		{"failed with error", telemetry.DiagnosticReply{V: 1, ID: "r1", Error: "relay stuck", At: at}, ""},
		{"ok with error", telemetry.DiagnosticReply{V: 1, ID: "r1", OK: true, Error: "x", At: at}, "error_with_ok"},
		{"failed without error", telemetry.DiagnosticReply{V: 1, ID: "r1", At: at}, "error_required"},
		{"failed with result", telemetry.DiagnosticReply{V: 1, ID: "r1", Error: "x", Result: json.RawMessage(`1`), At: at}, "result_without_ok"},
		{"version", telemetry.DiagnosticReply{V: 2, ID: "r1", OK: true, At: at}, "unsupported_version"},
		{"time", telemetry.DiagnosticReply{V: 1, ID: "r1", OK: true}, "invalid_time"},
		{"id", telemetry.DiagnosticReply{V: 1, ID: "r 1", OK: true, At: at}, "invalid_request_id"},
		{"result too large", telemetry.DiagnosticReply{V: 1, ID: "r1", OK: true, At: at,
			Result: json.RawMessage(`"` + strings.Repeat("a", telemetry.MaxResultBytes) + `"`)}, "too_large"},
		{"result duplicate key", telemetry.DiagnosticReply{V: 1, ID: "r1", OK: true, At: at, Result: json.RawMessage(`{"a":{"b":1,"b":1}}`)}, "invalid_json"},
		{"error too long", telemetry.DiagnosticReply{V: 1, ID: "r1", At: at, Error: strings.Repeat("e", telemetry.MaxMessageBytes+1)}, "too_long"},
		{"error control", telemetry.DiagnosticReply{V: 1, ID: "r1", At: at, Error: "a\x07"}, "control_character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate()
			if tt.code == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			wantCode(t, "Validate()", err, tt.code)
		})
	}
}

const goodJSON = `{"v":1,"time":"2026-07-01T12:30:00Z","readings":{"t":{"value":1,"unit":"Cel"}}}`

// TestDecode_Refuses attacks the strict decoder (rule 5): each payload is refused with its
// code, by every Decode function where it applies.
func TestDecode_Refuses(t *testing.T) {
	t.Parallel()
	decoders := map[string]func([]byte) error{
		"telemetry": func(b []byte) error { _, err := telemetry.DecodeTelemetry(b); return err },
		"event":     func(b []byte) error { _, err := telemetry.DecodeEvent(b); return err },
		"request":   func(b []byte) error { _, err := telemetry.DecodeRequest(b); return err },
		"reply":     func(b []byte) error { _, err := telemetry.DecodeReply(b); return err },
	}
	limits := map[string]int{"telemetry": telemetry.MaxPayloadBytes, "event": telemetry.MaxPayloadBytes,
		"request": telemetry.MaxRequestBytes, "reply": telemetry.MaxReplyBytes}
	for kind, decode := range decoders {
		pad := func(n int) []byte { // a JSON object of n bytes
			return []byte(`{"v":1,"x":"` + strings.Repeat("a", n-len(`{"v":1,"x":""}`)) + `"}`)
		}
		tests := []struct {
			name string
			data []byte
			code string
			kind problem.Kind
		}{
			{"empty", nil, "empty_payload", problem.Invalid},
			{"oversized", pad(limits[kind] + 1), "payload_too_large", problem.TooLarge},
			{"CBOR map", []byte{0xa2, 0x61, 'v', 0x01}, "unsupported_encoding", problem.Invalid},
			{"CBOR map 0xbf", []byte{0xbf, 0xff}, "unsupported_encoding", problem.Invalid},
			{"bad UTF-8", []byte("{\"v\":1,\"x\":\"\xff\"}"), "invalid_utf8", problem.Invalid},
			{"not JSON", []byte("v=1"), "malformed_payload", problem.Invalid},
			{"array", []byte(`[1]`), "malformed_payload", problem.Invalid},
			{"null", []byte(`null`), "", problem.Invalid}, // decodes to the zero value, which is invalid
			{"truncated", []byte(`{"v":1,`), "malformed_payload", problem.Invalid},
			{"trailing data", []byte(`{"v":1} {"v":1}`), "malformed_payload", problem.Invalid},
			{"trailing garbage", []byte(`{"v":1}x`), "malformed_payload", problem.Invalid},
			{"duplicate key", []byte(`{"v":1,"v":1}`), "malformed_payload", problem.Invalid},
			{"deep duplicate key", []byte(`{"v":1,"x":{"y":[{"z":1,"z":2}]}}`), "malformed_payload", problem.Invalid},
			{"too deep", []byte(`{"v":1,"x":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}`), "malformed_payload", problem.Invalid},
			{"unknown field", []byte(`{"v":1,"unknown":true}`), "malformed_payload", problem.Invalid},
			{"field name case", []byte(`{"V":1}`), "malformed_payload", problem.Invalid},
			{"field name case duplicate", []byte(`{"v":1,"V":2}`), "malformed_payload", problem.Invalid},
			{"field name Kelvin sign", []byte(`{"v":1,"o\u212a":true}`), "malformed_payload", problem.Invalid},
			{"reading field case", []byte(`{"v":1,"readings":{"t":{"value":1,"VALUE":2,"unit":"Cel"}}}`), "malformed_payload", problem.Invalid},
			{"wrong type", []byte(`{"v":"1"}`), "malformed_payload", problem.Invalid},
			{"bad time", []byte(`{"v":1,"time":"yesterday","at":"yesterday","deadline":"yesterday"}`), "malformed_payload", problem.Invalid},
			{"version 2", []byte(`{"v":2}`), "unsupported_version", problem.Invalid},
		}
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				err := decode(tt.data)
				pe, ok := errors.AsType[*problem.Error](err)
				if !ok {
					t.Fatalf("Decode(%.40q) = %v, want a *problem.Error", tt.data, err)
				}
				if pe.Kind != tt.kind {
					t.Errorf("Decode(%.40q) kind = %v, want %v", tt.data, pe.Kind, tt.kind)
				}
				if tt.code != "" {
					wantCode(t, fmt.Sprintf("Decode(%.40q)", tt.data), err, tt.code)
				}
			})
		}
	}
}

func TestDecodeTelemetry_Numbers(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		value string
		ok    bool
	}{
		{"1.7976931348623157e308", true},
		{"-1.7976931348623157e308", true},
		{"5e-324", true},
		{"1e309", false}, // overflows float64: refused, never Inf
		{"-1e400", false},
		{"NaN", false},
		{"Infinity", false},
		{`"1"`, false},
		{"0x10", false},
	} {
		data := strings.Replace(goodJSON, `"value":1`, `"value":`+tt.value, 1)
		_, err := telemetry.DecodeTelemetry([]byte(data))
		if (err == nil) != tt.ok {
			t.Errorf("DecodeTelemetry(value %s) = %v, want ok %v", tt.value, err, tt.ok)
		}
	}
}

func TestDecodeTelemetry_TooManyReadings(t *testing.T) {
	t.Parallel()
	var rs []string
	for i := range telemetry.MaxReadings + 1 {
		rs = append(rs, fmt.Sprintf(`"r%d":{"value":1,"unit":"Cel"}`, i))
	}
	data := `{"v":1,"time":"2026-07-01T12:30:00Z","readings":{` + strings.Join(rs, ",") + `}}`
	_, err := telemetry.DecodeTelemetry([]byte(data))
	wantCode(t, "DecodeTelemetry(33 readings)", err, "too_many_readings")
}

func TestDecode_AtLimit(t *testing.T) {
	t.Parallel()
	msg := strings.Repeat("m", telemetry.MaxMessageBytes)
	data := []byte(`{"v":1,"time":"2026-07-01T12:30:00Z","name":"x","message":"` + msg + `"}`)
	if _, err := telemetry.DecodeEvent(data); err != nil {
		t.Errorf("DecodeEvent(message of MaxMessageBytes) = %v", err)
	}
	padded := append(append([]byte{}, goodJSON[:len(goodJSON)-1]...), []byte(strings.Repeat(" ", telemetry.MaxPayloadBytes-len(goodJSON)))...)
	padded = append(padded, '}')
	if len(padded) != telemetry.MaxPayloadBytes {
		t.Fatalf("padded length %d", len(padded))
	}
	if _, err := telemetry.DecodeTelemetry(padded); err != nil {
		t.Errorf("DecodeTelemetry(%d bytes) = %v, want accepted at the limit", len(padded), err)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	zone := time.FixedZone("", 2*3600)
	tel := goodTelemetry()
	tel.Time = at.In(zone)
	ev := telemetry.Event{V: 1, Time: at, Name: "cycle_end", Message: "<ok> & \"done\"\n", Readings: map[string]telemetry.Reading{"w": {Value: -0.5, Unit: "L"}}}
	req := goodRequest()
	rep := telemetry.DiagnosticReply{V: 1, ID: "r1", OK: true, Result: json.RawMessage(`{"ohms":24,"ok":[true,null]}`), At: at}
	fail := telemetry.DiagnosticReply{V: 1, ID: "r1", Error: "relay stuck", At: at}
	check := func(name string, v any, decode func([]byte) (any, error)) {
		t.Helper()
		data, err := telemetry.Encode(v.(interface{ Validate() error }))
		if err != nil {
			t.Fatalf("Encode(%s) = %v", name, err)
		}
		got, err := decode(data)
		if err != nil {
			t.Fatalf("Decode(Encode(%s)) = %v", name, err)
		}
		if diff := cmp.Diff(v, got); diff != "" {
			t.Errorf("%s round trip (-want +got):\n%s", name, diff)
		}
	}
	check("telemetry", tel, func(b []byte) (any, error) { return telemetry.DecodeTelemetry(b) })
	check("event", ev, func(b []byte) (any, error) { return telemetry.DecodeEvent(b) })
	check("request", req, func(b []byte) (any, error) { return telemetry.DecodeRequest(b) })
	check("reply", rep, func(b []byte) (any, error) { return telemetry.DecodeReply(b) })
	check("failed reply", fail, func(b []byte) (any, error) { return telemetry.DecodeReply(b) })
	// Pointers encode the same.
	a, _ := telemetry.Encode(&tel)
	b, _ := telemetry.Encode(tel)
	if string(a) != string(b) {
		t.Errorf("Encode(&t) = %s, Encode(t) = %s", a, b)
	}
}

func nan() float64         { return zero() / zero() }
func inf(sign int) float64 { return float64(sign) / zero() }
func zero() float64        { return 0 }

// TestEncode_StaysWithinLimits: whatever validates encodes to a payload the cloud accepts,
// even text that JSON may escape (HTML characters, U+2028) at its largest.
func TestEncode_StaysWithinLimits(t *testing.T) {
	t.Parallel()
	readings := map[string]telemetry.Reading{}
	for i := range telemetry.MaxReadings {
		name := fmt.Sprintf("r%02d_%s", i, strings.Repeat("x", 59))
		readings[name] = telemetry.Reading{Value: -1.2345678901234567e-300, Unit: strings.Repeat("W", 16)}
	}
	ev := telemetry.Event{V: 1, Time: at, Name: "n", Cycle: strings.Repeat("c", 64), Readings: readings,
		Message: strings.Repeat("<", telemetry.MaxMessageBytes)}
	data, err := telemetry.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := telemetry.DecodeEvent(data); err != nil {
		t.Errorf("DecodeEvent(Encode(largest event), %d bytes) = %v", len(data), err)
	}
	rep := telemetry.DiagnosticReply{V: 1, ID: strings.Repeat("r", 64), OK: true, At: at,
		Result: json.RawMessage(`"` + strings.Repeat("&", telemetry.MaxResultBytes-2) + `"`)}
	data, err = telemetry.Encode(rep)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := telemetry.DecodeReply(data); err != nil {
		t.Errorf("DecodeReply(Encode(largest reply), %d bytes) = %v", len(data), err)
	}
}
