package periph

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeRequest_Accepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, line string
		want       request
	}{
		{"gpio.set", `{"id":1,"op":"gpio.set","pin":4,"value":true}`, request{ID: 1, Op: OpGPIOSet, Pin: 4, Value: true}},
		{"spaces and key order", ` { "value" : false , "pin" : 17 , "op" : "gpio.set" , "id" : 9 } `, request{ID: 9, Op: OpGPIOSet, Pin: 17}},
		{"adc.read", `{"id":2,"op":"adc.read","channel":0}`, request{ID: 2, Op: OpADCRead}},
		{"uart.write", `{"id":3,"op":"uart.write","uart":"ISU0","data":"aGk="}`, request{ID: 3, Op: OpUARTWrite, UART: "ISU0", Data: []byte("hi")}},
		{"uart.read", `{"id":3,"op":"uart.read","uart":"ISU0","max":16,"timeout_ms":0}`, request{ID: 3, Op: OpUARTRead, UART: "ISU0", Max: 16}},
		{"i2c write only", `{"id":4,"op":"i2c.transfer","bus":"ISU2","address":80,"write":"AAE=","read":0}`, request{ID: 4, Op: OpI2CTransfer, Bus: "ISU2", Address: 80, Write: []byte{0, 1}}},
		{"i2c read only", `{"id":4,"op":"i2c.transfer","bus":"ISU2","address":80,"write":"","read":2}`, request{ID: 4, Op: OpI2CTransfer, Bus: "ISU2", Address: 80, Write: []byte{}, Read: 2}},
		{"pwm.set", `{"id":5,"op":"pwm.set","pwm":"PWM0","period_ns":1000000,"duty_ns":250000,"enabled":true}`, request{ID: 5, Op: OpPWMSet, PWM: "PWM0", PeriodNS: 1000000, DutyNS: 250000, Enabled: true}},
		{"telemetry", `{"id":6,"op":"telemetry.publish","topic":"dw100/cycle","payload":{ "water" : 512 }}`, request{ID: 6, Op: OpTelemetryPublish, Topic: "dw100/cycle", Payload: json.RawMessage(`{"water":512}`)}},
		{"telemetry null payload", `{"id":6,"op":"telemetry.publish","topic":"t","payload":null}`, request{ID: 6, Op: OpTelemetryPublish, Topic: "t", Payload: json.RawMessage(`null`)}},
		{"health", `{"id":7,"op":"health.report","status":"healthy"}`, request{ID: 7, Op: OpHealthReport, Status: HealthHealthy}},
		{"health detail", `{"id":7,"op":"health.report","status":"unhealthy","detail":"door sensor stuck"}`, request{ID: 7, Op: OpHealthReport, Status: HealthUnhealthy, Detail: "door sensor stuck", HasDetail: true}},
		{"diag next", `{"id":8,"op":"diagnostics.next","timeout_ms":30000}`, request{ID: 8, Op: OpDiagnosticsNext, TimeoutMS: 30000}},
		{"diag reply result", `{"id":9,"op":"diagnostics.reply","request_id":"1","result":[1,2]}`, request{ID: 9, Op: OpDiagnosticsReply, RequestID: "1", Result: json.RawMessage(`[1,2]`)}},
		{"diag reply error", `{"id":9,"op":"diagnostics.reply","request_id":"1","error":"heater open circuit"}`, request{ID: 9, Op: OpDiagnosticsReply, RequestID: "1", Error: "heater open circuit", HasError: true}},
		{"largest id", `{"id":9007199254740991,"op":"gpio.get","pin":0}`, request{ID: 9007199254740991, Op: OpGPIOGet}},
		{"update.defer", `{"id":10,"op":"update.defer","seconds":3600}`, request{ID: 10, Op: OpUpdateDefer, Seconds: 3600}},
		{"update.defer longest", `{"id":10,"op":"update.defer","seconds":604800}`, request{ID: 10, Op: OpUpdateDefer, Seconds: MaxDeferSeconds}},
		{"update.allow", `{"id":11,"op":"update.allow"}`, request{ID: 11, Op: OpUpdateAllow}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, perr := decodeRequest([]byte(tt.line))
			if perr != nil {
				t.Fatalf("decodeRequest(%s) = error %v, want success", tt.line, perr)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(request{})); diff != "" {
				t.Errorf("decodeRequest(%s) mismatch (-want +got):\n%s", tt.line, diff)
			}
		})
	}
}

func TestDecodeRequest_RejectsBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, line string
		wantID     uint64
		wantCode   string
	}{
		{"empty", ``, 0, CodeBadRequest},
		{"not an object", `[1,2]`, 0, CodeBadRequest},
		{"two objects", `{"id":1,"op":"gpio.get","pin":4}{"id":2}`, 0, CodeBadRequest},
		{"trailing garbage", `{"id":1,"op":"gpio.get","pin":4} x`, 0, CodeBadRequest},
		{"truncated", `{"id":1,"op":"gpio.get","pin":4`, 0, CodeBadRequest},
		{"missing id", `{"op":"gpio.get","pin":4}`, 0, CodeBadRequest},
		{"id zero", `{"id":0,"op":"gpio.get","pin":4}`, 0, CodeBadRequest},
		{"id negative", `{"id":-1,"op":"gpio.get","pin":4}`, 0, CodeBadRequest},
		{"id fraction", `{"id":1.5,"op":"gpio.get","pin":4}`, 0, CodeBadRequest},
		{"id exponent", `{"id":1e3,"op":"gpio.get","pin":4}`, 0, CodeBadRequest},
		{"id string", `{"id":"1","op":"gpio.get","pin":4}`, 0, CodeBadRequest},
		{"id too large", `{"id":9007199254740992,"op":"gpio.get","pin":4}`, 0, CodeBadRequest},
		{"duplicate id", `{"id":1,"id":2,"op":"gpio.get","pin":4}`, 0, CodeBadRequest},
		{"duplicate pin", `{"id":1,"op":"gpio.get","pin":4,"pin":5}`, 0, CodeBadRequest},
		{"missing op", `{"id":3,"pin":4}`, 3, CodeBadRequest},
		{"op not string", `{"id":3,"op":7}`, 3, CodeBadRequest},
		{"unknown op", `{"id":3,"op":"gpio.explode"}`, 3, CodeUnknownOp},
		{"unknown field", `{"id":3,"op":"gpio.get","pin":4,"force":true}`, 3, CodeBadRequest},
		{"field of another op", `{"id":3,"op":"gpio.get","pin":4,"channel":1}`, 3, CodeBadRequest},
		{"field in other case", `{"id":3,"op":"gpio.get","PIN":4}`, 3, CodeBadRequest},
		{"missing pin", `{"id":3,"op":"gpio.get"}`, 3, CodeBadRequest},
		{"null pin", `{"id":3,"op":"gpio.get","pin":null}`, 3, CodeBadRequest},
		{"pin string", `{"id":3,"op":"gpio.get","pin":"4"}`, 3, CodeBadRequest},
		{"pin fraction", `{"id":3,"op":"gpio.get","pin":4.0}`, 3, CodeBadRequest},
		{"pin huge", `{"id":3,"op":"gpio.get","pin":99999999999999999999}`, 3, CodeBadRequest},
		{"value not bool", `{"id":3,"op":"gpio.set","pin":4,"value":1}`, 3, CodeBadRequest},
		{"data not base64", `{"id":3,"op":"uart.write","uart":"ISU0","data":"%%%"}`, 3, CodeBadRequest},
		{"data number", `{"id":3,"op":"uart.write","uart":"ISU0","data":5}`, 3, CodeBadRequest},
		{"uart read max 0", `{"id":3,"op":"uart.read","uart":"ISU0","max":0,"timeout_ms":0}`, 3, CodeBadRequest},
		{"uart read wait too long", `{"id":3,"op":"uart.read","uart":"ISU0","max":1,"timeout_ms":10001}`, 3, CodeBadRequest},
		{"i2c 10-bit address", `{"id":3,"op":"i2c.transfer","bus":"ISU2","address":128,"write":"AA==","read":0}`, 3, CodeBadRequest},
		{"i2c nothing", `{"id":3,"op":"i2c.transfer","bus":"ISU2","address":80,"write":"","read":0}`, 3, CodeBadRequest},
		{"i2c missing write", `{"id":3,"op":"i2c.transfer","bus":"ISU2","address":80,"read":1}`, 3, CodeBadRequest},
		{"pwm duty over period", `{"id":3,"op":"pwm.set","pwm":"P","period_ns":10,"duty_ns":11,"enabled":true}`, 3, CodeBadRequest},
		{"pwm zero period", `{"id":3,"op":"pwm.set","pwm":"P","period_ns":0,"duty_ns":0,"enabled":false}`, 3, CodeBadRequest},
		{"topic wildcard", `{"id":3,"op":"telemetry.publish","topic":"a/#","payload":1}`, 3, CodeBadRequest},
		{"topic leading slash", `{"id":3,"op":"telemetry.publish","topic":"/a","payload":1}`, 3, CodeBadRequest},
		{"topic empty level", `{"id":3,"op":"telemetry.publish","topic":"a//b","payload":1}`, 3, CodeBadRequest},
		{"topic too long", `{"id":3,"op":"telemetry.publish","topic":"` + strings.Repeat("a", 129) + `","payload":1}`, 3, CodeBadRequest},
		{"missing payload", `{"id":3,"op":"telemetry.publish","topic":"a"}`, 3, CodeBadRequest},
		{"health status", `{"id":3,"op":"health.report","status":"fine"}`, 3, CodeBadRequest},
		{"health detail too long", `{"id":3,"op":"health.report","status":"healthy","detail":"` + strings.Repeat("x", 1025) + `"}`, 3, CodeBadRequest},
		{"diag wait too long", `{"id":3,"op":"diagnostics.next","timeout_ms":60001}`, 3, CodeBadRequest},
		{"diag reply both", `{"id":3,"op":"diagnostics.reply","request_id":"1","result":1,"error":"x"}`, 3, CodeBadRequest},
		{"diag reply neither", `{"id":3,"op":"diagnostics.reply","request_id":"1"}`, 3, CodeBadRequest},
		{"diag reply empty error", `{"id":3,"op":"diagnostics.reply","request_id":"1","error":""}`, 3, CodeBadRequest},
		{"defer zero", `{"id":3,"op":"update.defer","seconds":0}`, 3, CodeBadRequest},
		{"defer negative", `{"id":3,"op":"update.defer","seconds":-60}`, 3, CodeBadRequest},
		{"defer over 7 days", `{"id":3,"op":"update.defer","seconds":604801}`, 3, CodeBadRequest},
		{"defer huge", `{"id":3,"op":"update.defer","seconds":99999999999999999999}`, 3, CodeBadRequest},
		{"defer fraction", `{"id":3,"op":"update.defer","seconds":1.5}`, 3, CodeBadRequest},
		{"defer string", `{"id":3,"op":"update.defer","seconds":"3600"}`, 3, CodeBadRequest},
		{"defer missing seconds", `{"id":3,"op":"update.defer"}`, 3, CodeBadRequest},
		{"allow with a field", `{"id":3,"op":"update.allow","seconds":1}`, 3, CodeBadRequest},
		{"too many fields", `{"id":3,"op":"gpio.get","a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"k":1,"l":1,"m":1,"n":1,"o":1}`, 0, CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, perr := decodeRequest([]byte(tt.line))
			if perr == nil {
				t.Fatalf("decodeRequest(%s) = %+v, want error %s", tt.line, got, tt.wantCode)
			}
			if perr.Code != tt.wantCode || got.ID != tt.wantID {
				t.Errorf("decodeRequest(%s) = id %d, code %s (%s), want id %d, code %s", tt.line, got.ID, perr.Code, perr.Message, tt.wantID, tt.wantCode)
			}
		})
	}
}

func TestReadLine_BoundsLength(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", MaxLineBytes+1)
	exact := strings.Repeat("y", MaxLineBytes)
	br := bufio.NewReader(strings.NewReader(long + "\n" + exact + "\nlast"))
	if _, tooLong, err := readLine(br, MaxLineBytes); !tooLong || err != nil {
		t.Fatalf("readLine(%d bytes) = tooLong %v, err %v, want true, nil", len(long), tooLong, err)
	}
	if line, tooLong, err := readLine(br, MaxLineBytes); tooLong || err != nil || string(line) != exact {
		t.Fatalf("readLine(%d bytes) = %d bytes, tooLong %v, err %v, want the line", len(exact), len(line), tooLong, err)
	}
	if line, _, err := readLine(br, MaxLineBytes); err == nil || string(line) != "last" {
		t.Fatalf("readLine(unterminated) = %q, %v, want \"last\" and EOF", line, err)
	}
}

// encodeRequest is decodeRequest's inverse, for the round-trip property of the fuzz target.
func encodeRequest(r request) []byte {
	m := map[string]any{"id": r.ID, "op": r.Op}
	for _, f := range opFields[r.Op] {
		var v any
		switch f.name {
		case "pin":
			v = r.Pin
		case "channel":
			v = r.Channel
		case "address":
			v = r.Address
		case "max":
			v = r.Max
		case "read":
			v = r.Read
		case "timeout_ms":
			v = r.TimeoutMS
		case "period_ns":
			v = r.PeriodNS
		case "duty_ns":
			v = r.DutyNS
		case "seconds":
			v = r.Seconds
		case "value":
			v = r.Value
		case "enabled":
			v = r.Enabled
		case "uart":
			v = r.UART
		case "bus":
			v = r.Bus
		case "pwm":
			v = r.PWM
		case "topic":
			v = r.Topic
		case "status":
			v = r.Status
		case "request_id":
			v = r.RequestID
		case "data":
			v = r.Data
		case "write":
			v = r.Write
		case "payload":
			v = r.Payload
		case "detail":
			if !r.HasDetail {
				continue
			}
			v = r.Detail
		case "error":
			if !r.HasError {
				continue
			}
			v = r.Error
		case "result":
			if r.Result == nil {
				continue
			}
			v = r.Result
		}
		m[f.name] = v
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// FuzzDecodeRequest: no panic on any line; a decoded request re-encodes to a line that
// decodes to the same request.
func FuzzDecodeRequest(f *testing.F) {
	// More seeds are in testdata/fuzz/FuzzDecodeRequest.
	f.Add([]byte(`{"id":1,"op":"gpio.set","pin":4,"value":true}`))
	f.Add([]byte(`{"id":2,"op":"telemetry.publish","topic":"dw100/cycle","payload":{"a":[1,"<&>"]}}`))
	f.Add([]byte(`{"id":3,"op":"update.defer","seconds":3600}`))
	f.Add([]byte(`{"id":4,"op":"update.allow"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		if len(line) > MaxLineBytes {
			return // readLine never hands such a line over
		}
		r, perr := decodeRequest(line)
		if perr != nil {
			if perr.Code == "" || perr.Message == "" {
				t.Fatalf("decodeRequest(%q) = error without code or message: %+v", line, perr)
			}
			return
		}
		again, perr := decodeRequest(encodeRequest(r))
		if perr != nil {
			t.Fatalf("decodeRequest(encodeRequest(%+v)) = error %v", r, perr)
		}
		if diff := cmp.Diff(r, again, cmp.AllowUnexported(request{})); diff != "" {
			t.Fatalf("round trip of %q changed the request (-first +second):\n%s", line, diff)
		}
	})
}
