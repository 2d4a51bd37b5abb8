// Package telemetry is the contract between a device and the tenant's cloud (`moat cloud`):
// the MQTT topic scheme, the NATS subjects the embedded broker maps the topics to, and the
// versioned payloads a device publishes (telemetry readings and events) and exchanges for
// remote diagnostics. The agent links it (it is small and has no dependencies beyond the
// standard library and internal/problem), so the device checks what its app publishes with
// the very rules the cloud applies; the cloud decodes what arrives with the same functions.
//
// # Topics
//
// Every topic of a device starts with devices/{device-id}, where the device ID is the one
// its certificate names (64 lower-case hex digits):
//
//	devices/{id}/telemetry                      device → cloud, Telemetry
//	devices/{id}/events                         device → cloud, Event
//	devices/{id}/diagnostics/{request-id}       cloud → device, DiagnosticRequest
//	devices/{id}/diagnostics/{request-id}/reply device → cloud, DiagnosticReply
//
// A device may publish only on its own first, second and fourth topics and subscribe only
// on its own diagnostics requests; the broker enforces it (internal/cloud/broker).
//
// # Payloads
//
// JSON objects with a version field "v" (1 today). A payload that starts with a CBOR map
// (first byte 0xa0 to 0xbf) is reserved for a later CBOR encoding of the same fields and
// is refused with unsupported_encoding today. Decoding is strict and bounded: at most
// MaxPayloadBytes, valid UTF-8, exactly one object, no unknown or duplicate fields, every
// name and unit from a small alphabet, finite numbers (rule 5; FuzzDecodeTelemetry and
// friends). Errors are *problem.Error with a stable Code, the reason the cloud counts a
// dropped message under.
package telemetry

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Version is the payload version this package writes and reads.
const Version = 1

// Topic kinds.
const (
	KindTelemetry       = "telemetry"
	KindEvents          = "events"
	KindDiagnostics     = "diagnostics"
	KindDiagnosticReply = "reply"
)

// Stream and subject names of the broker's JetStream storage.
const (
	// Stream is the JetStream stream that keeps what devices publish until the cloud's
	// ingest has stored it.
	Stream = "MOAT_DEVICES"
	// SubjectPrefix is the first token of every device subject.
	SubjectPrefix = "devices"
)

// StoredPrefix is what the broker (nats-server's MQTT) puts before the subject of a
// QoS 1 message it stores: it acknowledges a device's QoS 1 PUBLISH only once the
// message is stored under StoredPrefix+subject. Stream captures those subjects, so a
// PUBACK means "in Stream" (a device's QoS 0 publishes are not stored). A diagnostics
// request published with JetStream to StoredRequestSubject (as the broker's
// RequestMsg makes it) reaches a device's persistent session even when it connects
// later; a plain NATS publish on the device subject reaches only a connected device.
const StoredPrefix = "$MQTT.msgs."

// StreamSubjects are the NATS subjects Stream captures: everything devices publish
// with QoS 1, as the broker stores it.
var StreamSubjects = []string{
	StoredPrefix + "devices.*.telemetry",
	StoredPrefix + "devices.*.events",
	StoredPrefix + "devices.*.diagnostics.*.reply",
}

// StoredRequestSubject is the subject to publish (with JetStream) the diagnostics
// request id for device on so that the device's QoS 1 subscription gets it, now or
// when it next connects.
func StoredRequestSubject(device, id string) string {
	return StoredPrefix + Subject(DiagnosticsTopic(device, id))
}

var (
	deviceIDRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	requestIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// ValidDeviceID reports whether id is a device ID as certificates name it.
func ValidDeviceID(id string) bool { return deviceIDRE.MatchString(id) }

// ValidRequestID reports whether id may name a diagnostics request: 1 to 64 letters,
// digits, '_' or '-' (one MQTT topic level and one NATS token).
func ValidRequestID(id string) bool { return requestIDRE.MatchString(id) }

// TelemetryTopic is the MQTT topic device publishes its readings on.
func TelemetryTopic(device string) string { return "devices/" + device + "/telemetry" }

// EventsTopic is the MQTT topic device publishes its events on.
func EventsTopic(device string) string { return "devices/" + device + "/events" }

// DiagnosticsTopic is the MQTT topic of the diagnostics request id for device.
func DiagnosticsTopic(device, id string) string {
	return "devices/" + device + "/diagnostics/" + id
}

// DiagnosticsFilter is the MQTT topic filter a device subscribes to for its diagnostics
// requests.
func DiagnosticsFilter(device string) string { return "devices/" + device + "/diagnostics/+" }

// ReplyTopic is the MQTT topic device answers the diagnostics request id on.
func ReplyTopic(device, id string) string { return DiagnosticsTopic(device, id) + "/reply" }

// Subject is the NATS subject of an MQTT topic: the broker maps '/' to '.'.
func Subject(topic string) string { return strings.ReplaceAll(topic, "/", ".") }

// Address is a parsed device subject or topic.
type Address struct {
	Device string
	// Kind is KindTelemetry, KindEvents, KindDiagnostics (a request) or
	// KindDiagnosticReply.
	Kind string
	// Request is the diagnostics request ID of KindDiagnostics and KindDiagnosticReply.
	Request string
}

// ErrBadAddress is wrapped by ParseSubject's errors.
var ErrBadAddress = errors.New("not a device subject")

// ParseSubject reads a NATS subject of the scheme (devices.{id}.telemetry, ...), with
// or without StoredPrefix.
func ParseSubject(subject string) (Address, error) {
	return parse(strings.Split(strings.TrimPrefix(subject, StoredPrefix), "."), subject)
}

// ParseTopic reads an MQTT topic of the scheme (devices/{id}/telemetry, ...).
func ParseTopic(topic string) (Address, error) {
	return parse(strings.Split(topic, "/"), topic)
}

func parse(parts []string, s string) (Address, error) {
	bad := func() (Address, error) { return Address{}, fmt.Errorf("%w: %.200q", ErrBadAddress, s) }
	if len(parts) < 3 || parts[0] != SubjectPrefix || !ValidDeviceID(parts[1]) {
		return bad()
	}
	a := Address{Device: parts[1]}
	switch {
	case len(parts) == 3 && (parts[2] == KindTelemetry || parts[2] == KindEvents):
		a.Kind = parts[2]
	case len(parts) == 4 && parts[2] == KindDiagnostics && ValidRequestID(parts[3]):
		a.Kind, a.Request = KindDiagnostics, parts[3]
	case len(parts) == 5 && parts[2] == KindDiagnostics && ValidRequestID(parts[3]) && parts[4] == KindDiagnosticReply:
		a.Kind, a.Request = KindDiagnosticReply, parts[3]
	default:
		return bad()
	}
	return a, nil
}
