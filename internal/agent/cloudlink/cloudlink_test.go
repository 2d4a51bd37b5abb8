package cloudlink_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/moat-iot/moat/internal/agent/cloudlink"
	"github.com/moat-iot/moat/internal/telemetry"
)

// certHolder plays the attestation client: it holds the current certificate and closes
// its change channel when a new one arrives.
type certHolder struct {
	mu      sync.Mutex
	cert    tls.Certificate
	changed chan struct{}
}

func newCertHolder(c tls.Certificate) *certHolder {
	return &certHolder{cert: c, changed: make(chan struct{})}
}

func (h *certHolder) Certificate(context.Context) (tls.Certificate, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cert, nil
}

func (h *certHolder) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

func (h *certHolder) renew(c tls.Certificate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cert = c
	close(h.changed)
	h.changed = make(chan struct{})
}

type fixture struct {
	t      *testing.T
	pki    *pki
	certs  *certHolder
	queue  string
	calls  atomic.Int64
	broker string
}

func newFixture(t *testing.T, p *pki, brokerURL string) *fixture {
	return &fixture{t: t, pki: p, certs: newCertHolder(p.device(100)), queue: t.TempDir(), broker: brokerURL}
}

func (f *fixture) config() cloudlink.Config {
	return cloudlink.Config{
		Broker: f.broker, CAs: f.pki.pool, Certificate: f.certs.Certificate, CertificateChanged: f.certs.Changed,
		DeviceID: testDevice, Product: "dw100", QueueDir: f.queue, Now: time.Now,
		Diagnose: func(ctx context.Context, command string, args json.RawMessage) (json.RawMessage, error) {
			f.calls.Add(1)
			if command != "heater-self-test" {
				return nil, fmt.Errorf("no diagnostic %q", command)
			}
			return json.RawMessage(`{"ok":true,"verdict":"ok"}`), nil
		},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}
}

// start runs a link on cfg until the returned stop is called.
func start(t *testing.T, cfg cloudlink.Config) (*cloudlink.Link, func()) {
	t.Helper()
	l, err := cloudlink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := l.Run(ctx); err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return l, stop
}

func reading(n int) []byte {
	return fmt.Appendf(nil, `{"cycle":"c-1","phase":"wash","readings":{"n":{"value":%d,"unit":"1"},"water_temp":{"value":55.5,"unit":"Cel"}}}`, n)
}

func TestLink_PublishesTelemetryAndEvents(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, p)
	f := newFixture(t, p, b.url())
	l, _ := start(t, f.config())
	if err := l.Publish(t.Context(), cloudlink.TopicTelemetry, reading(1)); err != nil {
		t.Fatalf("Publish(telemetry) = %v", err)
	}
	ev := `{"v":1,"time":"2026-01-02T03:04:05Z","name":"cycle_end","cycle":"c-1","readings":{"water_used":{"value":11.5,"unit":"L"},"energy_used":{"value":0.9,"unit":"kW.h"}}}`
	if err := l.Publish(t.Context(), cloudlink.TopicEvents, []byte(ev)); err != nil {
		t.Fatalf("Publish(events) = %v", err)
	}
	var tel, evs [][]byte
	eventually(t, "both messages in the stream", func() bool {
		tel = b.messages(t.Context(), telemetry.Subject(telemetry.TelemetryTopic(testDevice)))
		evs = b.messages(t.Context(), telemetry.Subject(telemetry.EventsTopic(testDevice)))
		return len(tel) == 1 && len(evs) == 1
	})
	got, err := telemetry.DecodeTelemetry(tel[0])
	if err != nil {
		t.Fatalf("DecodeTelemetry(stored) = %v", err)
	}
	// The link filled in what the app left out.
	if got.V != telemetry.Version || got.Time.IsZero() || got.Readings["water_temp"].Unit != "Cel" {
		t.Errorf("stored telemetry = %+v, want v 1, a time and the readings", got)
	}
	e, err := telemetry.DecodeEvent(evs[0])
	if err != nil || e.Name != "cycle_end" || !e.Time.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("stored event = %+v, %v; want cycle_end at the app's time", e, err)
	}
	if !b.auth.sawSerial(100) || b.auth.users[0] != "dw100" {
		t.Errorf("broker saw serials %v users %v, want 100 and dw100", b.auth.serials, b.auth.users)
	}
	if s := l.Stats(); s.Queued != 0 || s.Sent != 2 {
		t.Errorf("Stats() = %+v, want nothing queued and 2 sent", s)
	}
}

// TestLink_RefusesOtherAppTopics: the app publishes on its device's telemetry and events
// only; a reply topic, another device's topic or a wildcard is refused and nothing queued.
func TestLink_RefusesOtherAppTopics(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	f := newFixture(t, p, "mqtts://127.0.0.1:1")
	l, err := cloudlink.New(f.config())
	if err != nil {
		t.Fatal(err)
	}
	other := "4f2a000000000000000000000000000000000000000000000000000000000002"
	for _, topic := range []string{
		"diagnostics/1/reply", "reply", telemetry.TelemetryTopic(other), "devices/" + testDevice + "/telemetry",
		"#", "+/telemetry", "telemetry/x", "Telemetry", "", "dw100/telemetry",
	} {
		if err := l.Publish(t.Context(), topic, reading(1)); !errors.Is(err, cloudlink.ErrRefused) {
			t.Errorf("Publish(%q) = %v, want ErrRefused", topic, err)
		}
	}
	for name, payload := range map[string]string{
		"not json":        `x`,
		"unknown field":   `{"readings":{"a":{"value":1,"unit":"C"}},"extra":1}`,
		"duplicate key":   `{"readings":{"a":{"value":1,"unit":"C"}},"readings":{"b":{"value":1,"unit":"C"}}}`,
		"no readings":     `{}`,
		"wrong version":   `{"v":2,"readings":{"a":{"value":1,"unit":"C"}}}`,
		"bad unit":        `{"readings":{"a":{"value":1,"unit":"deg C"}}}`,
		"event no name":   `{"readings":{"a":{"value":1,"unit":"C"}}}`,
		"array":           `[1]`,
		"too large":       `{"readings":{"a":{"value":1,"unit":"C"}},"cycle":"` + strings.Repeat("a", 9000) + `"}`,
		"cbor map prefix": "\xa1\x61v\x01",
	} {
		topic := cloudlink.TopicTelemetry
		if name == "event no name" {
			topic = cloudlink.TopicEvents
		}
		if err := l.Publish(t.Context(), topic, []byte(payload)); !errors.Is(err, cloudlink.ErrRefused) {
			t.Errorf("Publish(%s) = %v, want ErrRefused", name, err)
		}
	}
	if s := l.Stats(); s.Queued != 0 || s.Refused == 0 {
		t.Errorf("Stats() = %+v, want nothing queued and refusals counted", s)
	}
	if des, _ := os.ReadDir(f.queue); len(des) != 0 {
		t.Errorf("queue dir holds %d files, want 0", len(des))
	}
}

// TestLink_DeliversOnceAcrossBrokerOutageAndRestart is ATTACKS row 35 for telemetry: the
// broker stops, the app publishes while it is down, the agent restarts meanwhile, the
// broker comes back: every message is in the stream exactly once.
func TestLink_DeliversOnceAcrossBrokerOutageAndRestart(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, p)
	f := newFixture(t, p, b.url())
	subject := telemetry.Subject(telemetry.TelemetryTopic(testDevice))

	l, stop := start(t, f.config())
	if err := l.Publish(t.Context(), cloudlink.TopicTelemetry, reading(0)); err != nil {
		t.Fatal(err)
	}
	// Acknowledged too, not only stored: a PUBACK the broker's stop cuts off would leave
	// the message queued, and sending it again is MQTT's at-least-once, not a fault.
	eventually(t, "the first message", func() bool { return len(b.messages(t.Context(), subject)) == 1 && l.Stats().Queued == 0 })

	b.stop()
	const n = 25
	for i := 1; i <= n; i++ {
		if err := l.Publish(t.Context(), cloudlink.TopicTelemetry, reading(i)); err != nil {
			t.Fatalf("Publish(%d) while the broker is down = %v", i, err)
		}
	}
	stop() // the agent restarts while the broker is down
	l2, err := cloudlink.New(f.config())
	if err != nil {
		t.Fatal(err)
	}
	if s := l2.Stats(); s.Queued != n {
		t.Fatalf("after a restart Stats().Queued = %d, want %d", s.Queued, n)
	}
	for i := n + 1; i <= 2*n; i++ {
		if err := l2.Publish(t.Context(), cloudlink.TopicTelemetry, reading(i)); err != nil {
			t.Fatal(err)
		}
	}
	l2, _ = start(t, f.config())
	b.start()
	eventually(t, "the queue to drain", func() bool { return l2.Stats().Queued == 0 })
	var msgs [][]byte
	eventually(t, "every message in the stream", func() bool {
		msgs = b.messages(t.Context(), subject)
		return len(msgs) >= 2*n+1
	})
	count := map[float64]int{}
	for _, m := range msgs {
		tel, err := telemetry.DecodeTelemetry(m)
		if err != nil {
			t.Fatalf("stored message %s: %v", m, err)
		}
		count[tel.Readings["n"].Value]++
	}
	for i := 0; i <= 2*n; i++ {
		if count[float64(i)] != 1 {
			t.Errorf("message %d stored %d times, want once", i, count[float64(i)])
		}
	}
	if len(msgs) != 2*n+1 {
		t.Errorf("stream holds %d messages, want %d", len(msgs), 2*n+1)
	}
}

// TestLink_OfflineFloodStaysWithinMaxQueue: an app that floods while the cloud is away
// fills at most MaxQueueBytes and MaxQueueMessages; the oldest telemetry goes first and
// events stay.
func TestLink_OfflineFloodStaysWithinMaxQueue(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	f := newFixture(t, p, "mqtts://127.0.0.1:1")
	cfg := f.config()
	cfg.MaxQueueBytes, cfg.MaxQueueMessages = 64<<10, 40
	l, err := cloudlink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 1000)
	for i := range 500 {
		if i%100 == 0 {
			ev := fmt.Sprintf(`{"name":"cycle_end","cycle":"c-%d","message":"%s"}`, i, big)
			if err := l.Publish(t.Context(), cloudlink.TopicEvents, []byte(ev)); err != nil {
				t.Fatal(err)
			}
		}
		tel := fmt.Sprintf(`{"cycle":"%s","readings":{"n":{"value":%d,"unit":"1"}}}`, strings.Repeat("c", 60), i)
		if err := l.Publish(t.Context(), cloudlink.TopicTelemetry, []byte(tel)); err != nil {
			t.Fatal(err)
		}
	}
	des, err := os.ReadDir(f.queue)
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	events := 0
	for _, de := range des {
		fi, _ := de.Info()
		size += fi.Size()
		if strings.HasSuffix(de.Name(), ".e.json") {
			events++
		}
	}
	if len(des) > cfg.MaxQueueMessages || size > cfg.MaxQueueBytes {
		t.Errorf("queue holds %d files, %d bytes; want at most %d and %d", len(des), size, cfg.MaxQueueMessages, cfg.MaxQueueBytes)
	}
	if events != 5 {
		t.Errorf("queue holds %d events, want all 5", events)
	}
	if s := l.Stats(); s.Dropped != 505-int64(len(des)) {
		t.Errorf("Stats().Dropped = %d, want %d", s.Dropped, 505-len(des))
	}
	// A reopened queue with a smaller bound trims itself.
	cfg.MaxQueueMessages = 10
	l2, err := cloudlink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := l2.Stats(); s.Queued != 10 {
		t.Errorf("reopened with 10: Stats().Queued = %d", s.Queued)
	}
}

// TestLink_ReconnectsWithRenewedCertificate: after a renewal the broker sees the new
// certificate; the link does not keep a session on the old one.
func TestLink_ReconnectsWithRenewedCertificate(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, p)
	f := newFixture(t, p, b.url())
	l, _ := start(t, f.config())
	eventually(t, "a connection with serial 100", func() bool { return b.auth.sawSerial(100) && l.Stats().Connects == 1 })
	f.certs.renew(p.device(101))
	eventually(t, "a connection with serial 101", func() bool { return b.auth.sawSerial(101) && l.Stats().Connects == 2 })
	if err := l.Publish(t.Context(), cloudlink.TopicTelemetry, reading(7)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message", func() bool {
		return len(b.messages(t.Context(), telemetry.Subject(telemetry.TelemetryTopic(testDevice)))) == 1
	})

	// Without a notification (a new attestation session), Kick makes it check.
	f.certs.mu.Lock()
	f.certs.cert = p.device(102)
	f.certs.mu.Unlock()
	l.Kick()
	eventually(t, "a connection with serial 102", func() bool { return b.auth.sawSerial(102) && l.Stats().Connects == 3 })
}

// TestLink_AnswersDiagnosticsOnce: a request the cloud sends is run in the app and its reply
// reaches the stream; the same request again is not run again; an expired or malformed one
// is answered without running.
func TestLink_AnswersDiagnosticsOnce(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, p)
	f := newFixture(t, p, b.url())
	l, _ := start(t, f.config())
	eventually(t, "the link's session", func() bool { return l.Stats().Connects == 1 })

	op := operator(t, b, p)
	send := func(id string, deadline time.Time, payload []byte) {
		t.Helper()
		if payload == nil {
			var err error
			payload, err = telemetry.Encode(telemetry.DiagnosticRequest{V: 1, ID: id, Command: "heater-self-test", Deadline: deadline})
			if err != nil {
				t.Fatal(err)
			}
		}
		tok := op.Publish(telemetry.DiagnosticsTopic(testDevice, id), 1, false, payload)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("operator publish: %v", tok.Error())
		}
	}
	replies := func() map[string][]telemetry.DiagnosticReply {
		out := map[string][]telemetry.DiagnosticReply{}
		for _, m := range b.messages(t.Context(), "devices."+testDevice+".diagnostics.*.reply") {
			r, err := telemetry.DecodeReply(m)
			if err != nil {
				t.Fatalf("stored reply %s: %v", m, err)
			}
			out[r.ID] = append(out[r.ID], r)
		}
		return out
	}
	send("r1", time.Now().Add(time.Minute), nil)
	send("r1", time.Now().Add(time.Minute), nil) // a redelivery
	send("r2", time.Now().Add(-time.Second), nil)
	send("r3", time.Now().Add(time.Minute), []byte(`{"v":1,"id":"r3"}`))
	var got map[string][]telemetry.DiagnosticReply
	eventually(t, "three replies", func() bool { got = replies(); return len(got) == 3 })
	if r := got["r1"]; len(r) != 1 || !r[0].OK || !bytes.Contains(r[0].Result, []byte(`"verdict":"ok"`)) {
		t.Errorf("reply to r1 = %+v, want one ok reply with the app's result", r)
	}
	if r := got["r2"]; len(r) != 1 || r[0].OK || r[0].Error != cloudlink.ReplyExpired {
		t.Errorf("reply to r2 = %+v, want %q", r, cloudlink.ReplyExpired)
	}
	if r := got["r3"]; len(r) != 1 || r[0].OK || r[0].Error != cloudlink.ReplyMalformed {
		t.Errorf("reply to r3 = %+v, want %q", r, cloudlink.ReplyMalformed)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("Diagnose ran %d times, want 1", n)
	}
}

// operator is an MQTT client standing in for the cloud's diagnostics sender.
func operator(t *testing.T, b *broker, p *pki) mqtt.Client {
	t.Helper()
	cert := p.issue(900, "operator", 2 /* client auth */, time.Now().Add(time.Hour))
	o := mqtt.NewClientOptions().AddBroker(strings.Replace(b.url(), "mqtts", "ssl", 1)).SetClientID("operator").
		SetUsername("operator").SetAutoReconnect(false).
		SetTLSConfig(&tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ServerName: "127.0.0.1"})
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("operator connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	err := cloudlink.Config{Broker: "mqtt://x:1", MaxQueueBytes: 10}.Validate()
	for _, want := range []string{"broker", "cas", "certificate", "device_id", "product", "queue_dir", "now", "diagnose", "max_queue_bytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a problem with %s", err, want)
		}
	}
	for _, u := range []string{"mqtts://h", "https://h:1", "mqtts://u@h:1", "mqtts://h:0", "mqtts://h:1/x", "tcp://h:1"} {
		if err := (cloudlink.Config{Broker: u}).Validate(); err == nil || !strings.Contains(err.Error(), "broker") {
			t.Errorf("Validate(broker %q) = %v, want a broker problem", u, err)
		}
	}
}
