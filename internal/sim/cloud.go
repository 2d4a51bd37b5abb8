package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Telemetry to the tenant's cloud (`moat cloud`, Config.Cloud). Each device that holds a
// certificate keeps one MQTT session with the broker, speaking what the agent's cloud link
// (internal/agent/cloudlink) speaks: MQTT 3.1.1 over TLS trusting only CloudConfig.CAs,
// presenting the attested certificate, client ID = device ID, user name = product, a
// persistent session (clean session false), keep-alive 60 s, the device's diagnostics
// subscribed at QoS 1, telemetry and replies published at QoS 1 and kept until the broker's
// PUBACK, the topics and payload encoders of internal/telemetry, and the link's rules for
// requests (a request decoded strictly, answered once, "expired" past its deadline, "busy"
// while another runs). It is not the cloud link itself: paho's client costs ten goroutines
// and about 100 KB per session, which 10,000 devices in one process cannot spare; the
// session here (mqtt.go) is one goroutine. The outbox is in memory, at most
// cloudQueueMessages (the oldest telemetry goes first). A renewed certificate ends the
// session and the device connects again with the new one; a reconnect storm (Expire) ends
// every session at once, as the power cut it plays would.
//
// The device's app is a model of the DW100 (examples/dw100, internal/demo/dw100app.go): every
// Interval (with jitter of a tenth either way) it publishes one telemetry message of its wash
// cycle (heat, wash, rinse, drying, drying) with the water temperature, the drying
// temperature and the rinse-agent level, which falls a little each cycle and is refilled when
// it runs out; it runs while the device holds a certificate. The devices of
// FailingHeaterPercent have a failing heater: their water and drying air stay cool, which
// the product's fleet rule (heater-drying-anomaly) catches. The "heater-self-test"
// diagnostic is answered as the DW100 app answers it, within min(its seconds, Interval)
// instead of its seconds.

// Telemetry interval bounds and default.
const (
	DefaultTelemetryInterval = time.Minute
	MinTelemetryInterval     = time.Second
	MaxTelemetryInterval     = time.Hour
	// cloudQueueMessages bounds a device's outbox: a device offline for long holds the
	// newest readings only, and 10,000 of them a few MiB at most.
	cloudQueueMessages = 16
)

// CloudConfig is where the simulated devices send telemetry. Fields without "optional" are
// required.
type CloudConfig struct {
	// Broker is the cloud's MQTT listener, mqtts://HOST:PORT (`moat cloud` prints it).
	Broker string
	// CAs are the only trust for the broker's certificate (`moat cloud`'s CA).
	CAs *x509.CertPool
	// Interval, optional, is how often each device publishes (DefaultTelemetryInterval;
	// MinTelemetryInterval to MaxTelemetryInterval).
	Interval time.Duration
	// FailingHeaterPercent, optional, is the share of the devices (0 to 100) whose heater
	// fails: every device whose index i has floor((i+1)*P/100) > floor(i*P/100), so that
	// n devices hold exactly floor(n*P/100) of them, the same ones every run.
	FailingHeaterPercent float64
}

func (c *CloudConfig) validate() []error {
	var errs []error
	u, err := url.Parse(c.Broker)
	port, perr := strconv.Atoi(u.Port())
	if err != nil || u.Scheme != "mqtts" || u.Hostname() == "" || perr != nil || port < 1 || port > 65535 || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("cloud.broker: %q is not mqtts://HOST:PORT", c.Broker))
	}
	if c.CAs == nil {
		errs = append(errs, errors.New("cloud.cas: required (the cloud's CA certificate)"))
	}
	if c.Interval != 0 && (c.Interval < MinTelemetryInterval || c.Interval > MaxTelemetryInterval) {
		errs = append(errs, fmt.Errorf("cloud.interval: must be %v to %v, got %v", MinTelemetryInterval, MaxTelemetryInterval, c.Interval))
	}
	if c.FailingHeaterPercent < 0 || c.FailingHeaterPercent > 100 {
		errs = append(errs, errors.New("cloud.failing_heater_percent: must be 0 to 100"))
	}
	return errs
}

// withDefaults is a copy of c with its defaults; nil stays nil.
func (c *CloudConfig) withDefaults() *CloudConfig {
	if c == nil {
		return nil
	}
	cc := *c
	if cc.Interval == 0 {
		cc.Interval = DefaultTelemetryInterval
	}
	return &cc
}

// CloudStats is what the devices did with the cloud.
type CloudStats struct {
	// Connected devices hold an MQTT session now; Connects counts sessions established.
	Connected int   `json:"connected"`
	Connects  int64 `json:"connects"`
	// Published counts the telemetry messages the devices' apps published; TelemetrySent
	// those the broker acknowledged (PUBACK); Dropped the messages dropped from a full
	// outbox (a device offline for long).
	Published     int64 `json:"published"`
	TelemetrySent int64 `json:"telemetry_sent"`
	Dropped       int64 `json:"dropped"`
	// DiagnosticsAnswered counts the diagnostics requests the devices answered (a result
	// or an error such as "busy").
	DiagnosticsAnswered int64 `json:"diagnostics_answered"`
	// FailingHeaters is how many devices have a failing heater.
	FailingHeaters int `json:"failing_heaters"`
}

// cloudCounters are the Sim's cloud totals.
type cloudCounters struct {
	published, sent, dropped, connects, diagnostics atomic.Int64
}

// cloudDevice is one device's side of the cloud: its MQTT session and its DW100.
type cloudDevice struct {
	d       *device
	failing bool
	changed atomic.Pointer[chan struct{}] // closed when the certificate changes
	live    atomic.Pointer[tls.Conn]      // the session's connection while it is up
	renewed atomic.Bool                   // the certificate changed: the session ended for it
	up      atomic.Bool                   // the broker accepted the session, which lasts

	mu     sync.Mutex
	conn   *tls.Conn // the session's, once up; writes hold mu
	out    []outMessage
	nextID uint16
	seen   []string // the last diagnostics request IDs, answered once
	busy   bool     // a diagnostic runs

	// The DW100, owned by the telemetry timer's callback.
	timer        *time.Timer
	cycle, step  int
	rinse, drift float64
}

// outMessage is a message published, or to publish, and not yet acknowledged.
type outMessage struct {
	id    uint16
	reply bool
	topic string
	data  []byte
}

// newCloudDevice is d's cloud side, nil without Config.Cloud.
func (s *Sim) newCloudDevice(d *device) *cloudDevice {
	cc := s.cfg.Cloud
	if cc == nil {
		return nil
	}
	p, i := cc.FailingHeaterPercent, float64(d.index)
	c := &cloudDevice{d: d, failing: math.Floor((i+1)*p/100) > math.Floor(i*p/100),
		rinse: 30 + 70*rand.Float64(), drift: 2*rand.Float64() - 1} //nolint:gosec // G404: a simulated dishwasher needs no secret randomness
	ch := make(chan struct{})
	c.changed.Store(&ch)
	return c
}

// certificateChanged tells d's cloud side that its certificate changed (attested, dropped):
// the session with the old one ends. Closing does not wait for a write in progress.
func (d *device) certificateChanged() {
	c := d.cloud
	if c == nil {
		return
	}
	c.renewed.Store(true)
	if conn := c.live.Load(); conn != nil {
		conn.Close() //nolint:errcheck // ending the session is all that matters
	}
	ch := make(chan struct{})
	close(*c.changed.Swap(&ch))
}

// certificate is the device's current certificate; without one it waits for one (the
// device is attesting).
func (c *cloudDevice) certificate(ctx context.Context) (*certificate, error) {
	for {
		ch := *c.changed.Load()
		if cert := c.d.cert.Load(); cert != nil {
			return cert, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// runCloud holds the device's cloud session until ctx ends: from its first certificate on,
// again at once after a renewal, and after a capped backoff with jitter when the broker
// cannot be reached or ends the session.
func (d *device) runCloud(ctx context.Context) {
	c := d.cloud
	c.startApp(ctx)
	fails := 0
	for ctx.Err() == nil {
		cert, err := c.certificate(ctx)
		if err != nil {
			return
		}
		c.renewed.Store(false)
		up, err := c.session(ctx, cert)
		switch {
		case ctx.Err() != nil:
			return
		case c.renewed.Load():
			fails = 0
			continue
		case up:
			fails = 0
		}
		fails++
		d.s.log.DebugContext(ctx, "simulated device's cloud session ended", "device_id", d.id[:16], "failures", fails, "err", err)
		sleep(ctx, backoff(fails, err))
	}
}

// startApp starts the DW100's telemetry: a timer, not a goroutine, so that an idle device
// costs no stack.
func (c *cloudDevice) startApp(ctx context.Context) {
	iv := c.d.s.cfg.Cloud.Interval
	c.timer = time.AfterFunc(MaxTelemetryInterval, func() { c.tick(ctx) })
	c.timer.Reset(time.Duration(rand.Int64N(int64(iv)))) //nolint:gosec // G404: spreading the fleet needs no secret randomness
	context.AfterFunc(ctx, func() { c.timer.Stop() })
}

func (c *cloudDevice) tick(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	if c.d.cert.Load() != nil {
		if data, err := telemetry.Encode(c.reading(c.d.s.now())); err == nil {
			c.publish(telemetry.TelemetryTopic(c.d.id), data, false)
			c.d.s.cloud.published.Add(1)
		}
	}
	iv := c.d.s.cfg.Cloud.Interval
	c.timer.Reset(iv*9/10 + time.Duration(rand.Int64N(int64(iv/5)+1))) //nolint:gosec // G404: as above
}

// The DW100's cycle: one message per phase step.
var dwPhases = [...]string{"heat", "wash", "rinse", "drying", "drying"}

// reading is the DW100's next telemetry message: its wash cycle moves one step.
func (c *cloudDevice) reading(now time.Time) telemetry.Telemetry {
	noise := func(spread float64) float64 { return spread * (2*rand.Float64() - 1) } //nolint:gosec // G404: as above
	// A working heater brings the water to 55 °C and the drying air to 65 °C (the app's
	// targets); a failing one leaves them near 32 °C and 40 °C.
	water, drying := 55.0, 65.0
	if c.failing {
		water, drying = 32, 40
	}
	water, drying = water+c.drift, drying+c.drift
	phase := dwPhases[c.step]
	var w, dr float64
	switch phase {
	case "heat":
		w, dr = 20+(water-20)*0.6+noise(2), 24+noise(1)
	case "wash":
		w, dr = water+noise(0.5), 26+noise(1)
	case "rinse":
		w, dr = water+3+noise(0.5), 27+noise(1)
		c.rinse -= 0.4 + 0.2*rand.Float64() //nolint:gosec // G404: as above
		if c.rinse < 2 {
			c.rinse = 100 // the owner refilled it
		}
	default:
		w, dr = water-10+noise(1), drying+noise(0.8)
	}
	t := telemetry.Telemetry{V: telemetry.Version, Time: now.UTC(), Cycle: "c-" + strconv.Itoa(c.cycle), Phase: phase,
		Readings: map[string]telemetry.Reading{
			"water_temp":  {Value: round1(w), Unit: "Cel"},
			"drying_temp": {Value: round1(dr), Unit: "Cel"},
			"rinse_agent": {Value: round1(max(c.rinse, 0)), Unit: "%"},
		}}
	if c.step++; c.step == len(dwPhases) {
		c.step, c.cycle = 0, c.cycle+1
	}
	return t
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// selfTestMinRise is the DW100 app's verdict threshold (internal/demo.SelfTestMinRise): a
// working heater warms the drying air by well over 100 °C a minute from cold.
const selfTestMinRise = 30.0

// diagnose answers the cloud's diagnostics as the DW100 app does: "heater-self-test" with
// args {"seconds": 1 to 60} (10 by default) runs the heater and judges how fast the drying
// air warms; it takes min(seconds, Interval) here.
func (c *cloudDevice) diagnose(ctx context.Context, command string, args json.RawMessage) (json.RawMessage, error) {
	if command != "heater-self-test" {
		return nil, fmt.Errorf("unknown diagnostic %q", command)
	}
	var a struct {
		Seconds int `json:"seconds"`
	}
	if len(args) > 0 && string(args) != "null" {
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, errors.New(`args must be {"seconds": 1 to 60}`)
		}
	}
	if a.Seconds == 0 {
		a.Seconds = 10
	}
	if a.Seconds < 1 || a.Seconds > 60 {
		return nil, errors.New(`args must be {"seconds": 1 to 60}`)
	}
	t := time.NewTimer(min(time.Duration(a.Seconds)*time.Second, c.d.s.cfg.Cloud.Interval))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
	}
	rise := 120 + 40*rand.Float64() //nolint:gosec // G404: as above
	if c.failing {
		rise = 2 * rand.Float64() //nolint:gosec // G404: as above
	}
	start := round1(25 + c.drift)
	verdict := "ok"
	if rise < selfTestMinRise {
		verdict = "heater_failing"
	}
	return json.Marshal(map[string]any{"ok": verdict == "ok", "rise_c_per_min": round1(rise), "verdict": verdict,
		"seconds": a.Seconds, "drying_temp_start": start, "drying_temp_end": round1(start + rise*float64(a.Seconds)/60)})
}

// cloudStats counts the devices' cloud side; nil without Config.Cloud.
func (s *Sim) cloudStats(devices []*device) *CloudStats {
	if s.cfg.Cloud == nil {
		return nil
	}
	st := &CloudStats{Published: s.cloud.published.Load(), TelemetrySent: s.cloud.sent.Load(), Dropped: s.cloud.dropped.Load(),
		Connects: s.cloud.connects.Load(), DiagnosticsAnswered: s.cloud.diagnostics.Load()}
	for _, d := range devices {
		if d.cloud.failing {
			st.FailingHeaters++
		}
		if d.cloud.up.Load() {
			st.Connected++
		}
	}
	return st
}
