package telemetry_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/telemetry"
)

var dev = strings.Repeat("0123456789abcdef", 4)

func TestTopics(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ got, want string }{
		{telemetry.TelemetryTopic(dev), "devices/" + dev + "/telemetry"},
		{telemetry.EventsTopic(dev), "devices/" + dev + "/events"},
		{telemetry.DiagnosticsTopic(dev, "r1"), "devices/" + dev + "/diagnostics/r1"},
		{telemetry.DiagnosticsFilter(dev), "devices/" + dev + "/diagnostics/+"},
		{telemetry.ReplyTopic(dev, "r1"), "devices/" + dev + "/diagnostics/r1/reply"},
		{telemetry.Subject(telemetry.ReplyTopic(dev, "r1")), "devices." + dev + ".diagnostics.r1.reply"},
	} {
		if tt.got != tt.want {
			t.Errorf("topic = %q, want %q", tt.got, tt.want)
		}
	}
}

func TestParseTopicAndSubject(t *testing.T) {
	t.Parallel()
	good := []struct {
		topic string
		want  telemetry.Address
	}{
		{telemetry.TelemetryTopic(dev), telemetry.Address{Device: dev, Kind: telemetry.KindTelemetry}},
		{telemetry.EventsTopic(dev), telemetry.Address{Device: dev, Kind: telemetry.KindEvents}},
		{telemetry.DiagnosticsTopic(dev, "r_1-A"), telemetry.Address{Device: dev, Kind: telemetry.KindDiagnostics, Request: "r_1-A"}},
		{telemetry.ReplyTopic(dev, "r_1-A"), telemetry.Address{Device: dev, Kind: telemetry.KindDiagnosticReply, Request: "r_1-A"}},
	}
	for _, tt := range good {
		got, err := telemetry.ParseTopic(tt.topic)
		if err != nil || got != tt.want {
			t.Errorf("ParseTopic(%q) = %+v, %v; want %+v", tt.topic, got, err, tt.want)
		}
		got, err = telemetry.ParseSubject(telemetry.Subject(tt.topic))
		if err != nil || got != tt.want {
			t.Errorf("ParseSubject(%q) = %+v, %v; want %+v", telemetry.Subject(tt.topic), got, err, tt.want)
		}
	}
	bad := []string{
		"",
		"devices",
		"devices/" + dev,
		"devices/" + dev + "/",
		"devices/" + dev + "/telemetry/",
		"devices/" + dev + "/telemetry/extra",
		"devices/" + strings.ToUpper(dev) + "/telemetry",
		"devices/" + dev[:63] + "/telemetry",
		"devices/" + dev + "0/telemetry",
		"devices/+/telemetry",
		"devices/#",
		"+/+/telemetry",
		"$SYS/broker",
		"tenants/x/devices/" + dev + "/telemetry",
		"Devices/" + dev + "/telemetry",
		"devices/" + dev + "/Telemetry",
		"devices/" + dev + "/commands",
		"devices/" + dev + "/diagnostics",
		"devices/" + dev + "/diagnostics/",
		"devices/" + dev + "/diagnostics/#",
		"devices/" + dev + "/diagnostics/+",
		"devices/" + dev + "/diagnostics/a.b",
		"devices/" + dev + "/diagnostics/" + strings.Repeat("r", 65),
		"devices/" + dev + "/diagnostics/r1/answer",
		"devices/" + dev + "/diagnostics/r1/reply/x",
		"/devices/" + dev + "/telemetry",
	}
	for _, topic := range bad {
		if a, err := telemetry.ParseTopic(topic); !errors.Is(err, telemetry.ErrBadAddress) {
			t.Errorf("ParseTopic(%q) = %+v, %v; want ErrBadAddress", topic, a, err)
		}
		if !strings.Contains(topic, ".") {
			if a, err := telemetry.ParseSubject(telemetry.Subject(topic)); !errors.Is(err, telemetry.ErrBadAddress) {
				t.Errorf("ParseSubject(%q) = %+v, %v; want ErrBadAddress", telemetry.Subject(topic), a, err)
			}
		}
	}
	// A subject with '/' in a token is not a topic in disguise.
	if _, err := telemetry.ParseSubject("devices." + dev + ".diagnostics.r/1.reply"); err == nil {
		t.Error("ParseSubject(request id with '/') = nil error")
	}
	// Errors quote at most 200 characters of what they refuse.
	_, err := telemetry.ParseTopic(strings.Repeat("x", 10000))
	if err == nil || len(err.Error()) > 300 {
		t.Errorf("ParseTopic(10000 bytes) error is %d bytes, want it bounded", len(err.Error()))
	}
}

func TestValidNames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		f    func(string) bool
		in   string
		want bool
	}{
		{telemetry.ValidDeviceID, dev, true},
		{telemetry.ValidDeviceID, dev[:63], false},
		{telemetry.ValidDeviceID, strings.ToUpper(dev), false},
		{telemetry.ValidRequestID, "a", true},
		{telemetry.ValidRequestID, strings.Repeat("a", 64), true},
		{telemetry.ValidRequestID, strings.Repeat("a", 65), false},
		{telemetry.ValidRequestID, "a+b", false},
		{telemetry.ValidName, "drying_temp", true},
		{telemetry.ValidName, "_x", false},
		{telemetry.ValidCommand, "heater-self-test", true},
		{telemetry.ValidCommand, "a b", false},
	} {
		if got := tt.f(tt.in); got != tt.want {
			t.Errorf("Valid...(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
