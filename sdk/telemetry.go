package sdk

import (
	"context"
	"time"
)

// Topics the runtime forwards to the tenant's cloud (`moat cloud`) with the device's
// certificate. With a cloud configured, the runtime refuses any other topic, and any
// payload the cloud would not accept, with ErrBadRequest; without one it drops what the
// app publishes.
const (
	TopicTelemetry = "telemetry"
	TopicEvents    = "events"
)

// Units in UCUM spelling, as the cloud's rules name them.
const (
	UnitCelsius      = "Cel"
	UnitPercent      = "%"
	UnitLitre        = "L"
	UnitKilowattHour = "kW.h"
)

// PayloadVersion is the version of the telemetry and event payloads this SDK writes.
const PayloadVersion = 1

// Reading is one measured value with its unit (UCUM: UnitCelsius, UnitPercent, ...).
// Names of readings, phases and events are a lower-case letter, then up to 63 lower-case
// letters, digits or '_'; a payload holds at most 32 readings.
type Reading struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Telemetry is readings taken at one time, optionally within a work cycle (a wash cycle)
// and one of its phases. The cloud summarizes per cycle and compares devices at the same
// phase.
type Telemetry struct {
	// Time, optional, is when the readings were taken; zero lets the runtime stamp them
	// with the device's clock as it takes them.
	Time time.Time
	// Cycle, optional, names the cycle: 1 to 64 letters, digits, '_', '.', ':' or '-'.
	Cycle string
	// Phase, optional ("heat", "wash", "rinse", "drying").
	Phase    string
	Readings map[string]Reading
}

// Event is something that happened (a cycle that ended), with optional figures and a
// message of at most 1 KiB.
type Event struct {
	Time     time.Time // optional, as Telemetry.Time
	Name     string
	Cycle    string // optional
	Readings map[string]Reading
	Message  string // optional
}

// telemetryWire and eventWire are the version 1 payloads (internal/telemetry on the
// runtime's side; TestSDKPayloads_DecodeInTheCloud keeps the two in step).
type telemetryWire struct {
	V        int                `json:"v"`
	Time     *time.Time         `json:"time,omitempty"`
	Cycle    string             `json:"cycle,omitempty"`
	Phase    string             `json:"phase,omitempty"`
	Readings map[string]Reading `json:"readings"`
}

type eventWire struct {
	V        int                `json:"v"`
	Time     *time.Time         `json:"time,omitempty"`
	Name     string             `json:"name"`
	Cycle    string             `json:"cycle,omitempty"`
	Readings map[string]Reading `json:"readings,omitempty"`
	Message  string             `json:"message,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// PublishTelemetry sends t to the tenant's cloud: the runtime checks it, keeps it on disk
// while the cloud is away and sends it once the cloud is reachable. A payload the cloud
// would not accept is ErrBadRequest; ErrUnavailable means retry later.
func (c *Client) PublishTelemetry(ctx context.Context, t Telemetry) error {
	return c.Publish(ctx, TopicTelemetry, telemetryWire{V: PayloadVersion, Time: optTime(t.Time), Cycle: t.Cycle, Phase: t.Phase, Readings: t.Readings})
}

// PublishEvent sends e to the tenant's cloud, as PublishTelemetry.
func (c *Client) PublishEvent(ctx context.Context, e Event) error {
	return c.Publish(ctx, TopicEvents, eventWire{V: PayloadVersion, Time: optTime(e.Time), Name: e.Name, Cycle: e.Cycle, Readings: e.Readings, Message: e.Message})
}
