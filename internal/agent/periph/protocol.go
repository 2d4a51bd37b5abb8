package periph

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MaxLineBytes bounds one request line, without its newline. A longer line is answered with
// CodeTooLarge and skipped; the connection stays usable.
const MaxLineBytes = 64 << 10

// maxID is the largest request ID: 2^53-1, so that every ID is exact in a JavaScript number.
const maxID = 1<<53 - 1

// Ops of the local API. docs/app-sdk.md describes each; TestDocs_ListEveryOpAndCode checks
// that it names them all.
const (
	OpGPIOSet          = "gpio.set"
	OpGPIOGet          = "gpio.get"
	OpADCRead          = "adc.read"
	OpUARTWrite        = "uart.write"
	OpUARTRead         = "uart.read"
	OpI2CTransfer      = "i2c.transfer"
	OpPWMSet           = "pwm.set"
	OpTelemetryPublish = "telemetry.publish"
	OpHealthReport     = "health.report"
	OpDiagnosticsNext  = "diagnostics.next"
	OpDiagnosticsReply = "diagnostics.reply"
	OpUpdateDefer      = "update.defer"
	OpUpdateAllow      = "update.allow"
)

// Error codes of the local API: the stable strings an app branches on.
const (
	// CodeBadRequest: the line is not one JSON object, a field is missing, unknown,
	// duplicated or of the wrong type, or a value is out of range.
	CodeBadRequest = "bad_request"
	// CodeTooLarge: the line is longer than MaxLineBytes. The reply has id 0.
	CodeTooLarge = "too_large"
	// CodeUnknownOp: the op is not one of the ops above.
	CodeUnknownOp = "unknown_op"
	// CodeCapabilityDenied: the app's manifest does not declare the pin, channel, UART, bus
	// or PWM it names (DESIGN rule 6).
	CodeCapabilityDenied = "capability_denied"
	// CodeUnsupported: the device's backend has no such peripheral kind.
	CodeUnsupported = "unsupported"
	// CodeIOError: the peripheral failed (no device at an I2C address, an input pin set,
	// an ADC channel not connected, a sysfs write refused).
	CodeIOError = "io_error"
	// CodeUnknownRequest: diagnostics.reply names a request that is not waiting for a reply
	// (never sent, already answered, or given up by the runtime).
	CodeUnknownRequest = "unknown_request"
	// CodeUnavailable: the runtime cannot take the request now (too many connections,
	// telemetry queue full, shutting down); retry later.
	CodeUnavailable = "unavailable"
	// CodeInternal: a bug in the runtime.
	CodeInternal = "internal"
)

// Limits of argument values.
const (
	maxUARTRead     = 4096
	maxI2CRead      = 4096
	maxUARTWaitMS   = 10_000
	maxDiagWaitMS   = 60_000
	maxTopicBytes   = 128
	maxDetailBytes  = 1024
	maxReqIDBytes   = 64
	maxDiagErrBytes = 1024
	maxI2CAddress   = 0x7f // 7-bit addresses
	// MaxDeferSeconds bounds one update.defer (7 days). The runtime bounds it further by
	// the product's setting, counted from the first deferral of a pending image.
	MaxDeferSeconds = 7 * 24 * 60 * 60
)

// request is one decoded request line. Only the fields of its op are set.
type request struct {
	ID uint64
	Op string

	Pin, Channel, Address int
	Max, Read, TimeoutMS  int
	Value, Enabled        bool
	UART, Bus, PWM        string
	Data, Write           []byte
	PeriodNS, DutyNS      int64
	Seconds               int64
	Topic                 string
	Payload, Result       json.RawMessage
	Status, Detail        string
	RequestID, Error      string
	HasDetail, HasError   bool
}

// opFields lists, for each op, the fields besides "id" and "op" that it takes; optional ones
// are marked. Any other field is an error.
var opFields = map[string][]field{
	OpGPIOSet:          {{"pin", false}, {"value", false}},
	OpGPIOGet:          {{"pin", false}},
	OpADCRead:          {{"channel", false}},
	OpUARTWrite:        {{"uart", false}, {"data", false}},
	OpUARTRead:         {{"uart", false}, {"max", false}, {"timeout_ms", false}},
	OpI2CTransfer:      {{"bus", false}, {"address", false}, {"write", false}, {"read", false}},
	OpPWMSet:           {{"pwm", false}, {"period_ns", false}, {"duty_ns", false}, {"enabled", false}},
	OpTelemetryPublish: {{"topic", false}, {"payload", false}},
	OpHealthReport:     {{"status", false}, {"detail", true}},
	OpDiagnosticsNext:  {{"timeout_ms", false}},
	OpDiagnosticsReply: {{"request_id", false}, {"result", true}, {"error", true}},
	OpUpdateDefer:      {{"seconds", false}},
	OpUpdateAllow:      {},
}

type field struct {
	name     string
	optional bool
}

// protoError is an error with its wire code.
type protoError struct {
	Code    string
	Message string
}

func (e *protoError) Error() string { return e.Code + ": " + e.Message }

func badRequest(format string, args ...any) *protoError {
	return &protoError{Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

// decodeRequest parses one request line (without its newline). It returns the request ID as
// soon as it is known, so that even a refused request is answered with its own ID; the ID is
// 0 when it could not be read. Decoding is strict: exactly one JSON object, no duplicate or
// unknown keys (compared case-sensitively, unlike encoding/json), every required field
// present and not null, numbers of the right type and range, nothing after the object.
// Fuzzed by FuzzDecodeRequest.
func decodeRequest(line []byte) (request, *protoError) {
	var r request
	obj, perr := splitObject(line)
	if perr != nil {
		return r, perr
	}
	// The ID first, so that later errors carry it.
	if raw, ok := obj["id"]; ok {
		id, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil || id < 1 || id > maxID {
			return r, badRequest("id must be an integer from 1 to %d", uint64(maxID))
		}
		r.ID = id
	} else {
		return r, badRequest("missing field id")
	}
	rawOp, ok := obj["op"]
	if !ok {
		return r, badRequest("missing field op")
	}
	if err := decodeString(rawOp, &r.Op); err != nil {
		return r, badRequest("op must be a string")
	}
	fields, ok := opFields[r.Op]
	if !ok {
		return r, &protoError{Code: CodeUnknownOp, Message: fmt.Sprintf("unknown op %q", truncate(r.Op, 64))}
	}
	for k := range obj {
		if k == "id" || k == "op" {
			continue
		}
		if !hasField(fields, k) {
			return r, badRequest("unknown field %q for op %s", truncate(k, 64), r.Op)
		}
	}
	for _, f := range fields {
		raw, present := obj[f.name]
		if !present && !f.optional {
			return r, badRequest("missing field %s", f.name)
		}
		if !present {
			continue
		}
		if err := r.set(f.name, raw); err != nil {
			return r, err
		}
	}
	return r, r.check()
}

func hasField(fs []field, name string) bool {
	for _, f := range fs {
		if f.name == name {
			return true
		}
	}
	return false
}

// splitObject splits a line holding exactly one JSON object into its members, refusing
// duplicate keys and trailing data.
func splitObject(line []byte) (map[string]json.RawMessage, *protoError) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil || t != json.Delim('{') {
		return nil, badRequest("a request is one JSON object on one line")
	}
	obj := make(map[string]json.RawMessage)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, badRequest("malformed JSON: %v", err)
		}
		k, ok := t.(string)
		if !ok {
			return nil, badRequest("malformed JSON object")
		}
		if _, dup := obj[k]; dup {
			return nil, badRequest("field %q appears twice", truncate(k, 64))
		}
		if len(obj) >= 16 {
			return nil, badRequest("too many fields")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, badRequest("malformed JSON: %v", err)
		}
		obj[k] = raw
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, badRequest("malformed JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badRequest("data after the JSON object")
	}
	return obj, nil
}

// set decodes one field's raw value into r.
func (r *request) set(name string, raw json.RawMessage) *protoError {
	if string(raw) == "null" && name != "payload" && name != "result" {
		return badRequest("field %s must not be null", name)
	}
	var err error
	switch name {
	case "pin":
		err = decodeInt(raw, &r.Pin)
	case "channel":
		err = decodeInt(raw, &r.Channel)
	case "address":
		err = decodeInt(raw, &r.Address)
	case "max":
		err = decodeInt(raw, &r.Max)
	case "read":
		err = decodeInt(raw, &r.Read)
	case "timeout_ms":
		err = decodeInt(raw, &r.TimeoutMS)
	case "period_ns":
		err = decodeInt(raw, &r.PeriodNS)
	case "duty_ns":
		err = decodeInt(raw, &r.DutyNS)
	case "seconds":
		err = decodeInt(raw, &r.Seconds)
	case "value":
		err = json.Unmarshal(raw, &r.Value)
	case "enabled":
		err = json.Unmarshal(raw, &r.Enabled)
	case "uart":
		err = decodeString(raw, &r.UART)
	case "bus":
		err = decodeString(raw, &r.Bus)
	case "pwm":
		err = decodeString(raw, &r.PWM)
	case "topic":
		err = decodeString(raw, &r.Topic)
	case "status":
		err = decodeString(raw, &r.Status)
	case "detail":
		r.HasDetail = true
		err = decodeString(raw, &r.Detail)
	case "request_id":
		err = decodeString(raw, &r.RequestID)
	case "error":
		r.HasError = true
		err = decodeString(raw, &r.Error)
	case "data":
		err = decodeBytes(raw, &r.Data)
	case "write":
		err = decodeBytes(raw, &r.Write)
	case "payload":
		r.Payload = compactJSON(raw)
	case "result":
		r.Result = compactJSON(raw)
	default:
		return &protoError{Code: CodeInternal, Message: "no decoder for field " + name}
	}
	if err != nil {
		return badRequest("field %s: %s", name, typeWant(name))
	}
	return nil
}

// check validates ranges and combinations once every field is decoded.
func (r *request) check() *protoError {
	switch r.Op {
	case OpUARTRead:
		if r.Max < 1 || r.Max > maxUARTRead {
			return badRequest("max must be from 1 to %d", maxUARTRead)
		}
		if r.TimeoutMS < 0 || r.TimeoutMS > maxUARTWaitMS {
			return badRequest("timeout_ms must be from 0 to %d", maxUARTWaitMS)
		}
	case OpI2CTransfer:
		if r.Address < 0 || r.Address > maxI2CAddress {
			return badRequest("address must be a 7-bit I2C address from 0 to %d", maxI2CAddress)
		}
		if r.Read < 0 || r.Read > maxI2CRead {
			return badRequest("read must be from 0 to %d", maxI2CRead)
		}
		if r.Read == 0 && len(r.Write) == 0 {
			return badRequest("an I2C transfer writes or reads at least one byte")
		}
	case OpPWMSet:
		if r.PeriodNS < 1 {
			return badRequest("period_ns must be positive")
		}
		if r.DutyNS < 0 || r.DutyNS > r.PeriodNS {
			return badRequest("duty_ns must be from 0 to period_ns")
		}
	case OpTelemetryPublish:
		if err := checkTopic(r.Topic); err != nil {
			return badRequest("topic: %v", err)
		}
	case OpHealthReport:
		if r.Status != HealthHealthy && r.Status != HealthUnhealthy {
			return badRequest("status must be %q or %q", HealthHealthy, HealthUnhealthy)
		}
		if len(r.Detail) > maxDetailBytes {
			return badRequest("detail is longer than %d bytes", maxDetailBytes)
		}
	case OpDiagnosticsNext:
		if r.TimeoutMS < 0 || r.TimeoutMS > maxDiagWaitMS {
			return badRequest("timeout_ms must be from 0 to %d", maxDiagWaitMS)
		}
	case OpUpdateDefer:
		if r.Seconds < 1 || r.Seconds > MaxDeferSeconds {
			return badRequest("seconds must be from 1 to %d", MaxDeferSeconds)
		}
	case OpDiagnosticsReply:
		if r.RequestID == "" || len(r.RequestID) > maxReqIDBytes {
			return badRequest("request_id must be 1 to %d bytes", maxReqIDBytes)
		}
		if r.HasError == (r.Result != nil) {
			return badRequest("a reply has exactly one of result and error")
		}
		if r.HasError && (r.Error == "" || len(r.Error) > maxDiagErrBytes) {
			return badRequest("error must be 1 to %d bytes", maxDiagErrBytes)
		}
	}
	return nil
}

// checkTopic accepts a telemetry topic: 1 to 128 bytes of letters, digits, '-', '_', '.'
// and '/', not starting or ending with '/' and without empty levels. MQTT wildcards and
// control characters are refused; the runtime prefixes the topic with the device's own.
func checkTopic(t string) error {
	if t == "" || len(t) > maxTopicBytes {
		return fmt.Errorf("must be 1 to %d bytes", maxTopicBytes)
	}
	prev := byte('/')
	for i := 0; i < len(t); i++ {
		c := t[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '/'
		if !ok {
			return fmt.Errorf("byte %d: only letters, digits, '-', '_', '.' and '/' are allowed", i)
		}
		if c == '/' && prev == '/' {
			return errors.New("no empty levels, and no leading '/'")
		}
		prev = c
	}
	if prev == '/' {
		return errors.New("no trailing '/'")
	}
	return nil
}

func typeWant(name string) string {
	switch name {
	case "value", "enabled":
		return "want true or false"
	case "data", "write":
		return "want a base64 string (RFC 4648, standard alphabet, padded)"
	case "uart", "bus", "pwm", "topic", "status", "detail", "request_id", "error":
		return "want a string"
	}
	return "want an integer in range"
}

// decodeInt accepts a JSON integer only: no fraction, no exponent, no quotes.
func decodeInt[T int | int64](raw json.RawMessage, v *T) error {
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return err
	}
	if int64(T(n)) != n { // int is 32 bits on some devices
		return errors.New("out of range")
	}
	*v = T(n)
	return nil
}

func decodeString(raw json.RawMessage, s *string) error {
	if len(raw) == 0 || raw[0] != '"' {
		return errors.New("not a string")
	}
	return json.Unmarshal(raw, s)
}

func decodeBytes(raw json.RawMessage, b *[]byte) error {
	if len(raw) == 0 || raw[0] != '"' {
		return errors.New("not a string")
	}
	if err := json.Unmarshal(raw, b); err != nil {
		return err
	}
	if *b == nil {
		*b = []byte{}
	}
	return nil
}

// compactJSON returns raw without insignificant white space; raw is already known to be
// one valid JSON value.
func compactJSON(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// readLine reads one newline-terminated line of at most max bytes (the newline not
// counted). A longer line is read to its end and discarded, and tooLong is true. A final
// line without a newline is returned with io.EOF.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		n := len(frag)
		if n > 0 && frag[n-1] == '\n' {
			n--
		}
		if !tooLong && len(buf)+n > max {
			tooLong, buf = true, nil
		}
		if !tooLong {
			buf = append(buf, frag[:n]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return buf, tooLong, err
		}
		return buf, tooLong, nil
	}
}

// response is one reply line.
type response struct {
	ID     uint64
	Err    *protoError
	Result map[string]any
}

// MarshalJSON writes {"id":..,"ok":..,"error":{..}} or {"id":..,"ok":true, result...}.
func (r response) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(r.Result)+3)
	for k, v := range r.Result {
		m[k] = v
	}
	m["id"] = r.ID
	m["ok"] = r.Err == nil
	if r.Err != nil {
		m["error"] = map[string]string{"code": r.Err.Code, "message": r.Err.Message}
	}
	return json.Marshal(m)
}
