package broker_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moat-iot/moat/internal/cloud/broker"
	"github.com/moat-iot/moat/internal/telemetry"
)

const denied = "All subscription requests were denied.\n"

// mosquitto exit codes: 5 is CONNACK "not authorised", 27 "timed out" (-W), 0 with
// the denied line when every SUBACK was a failure.
const (
	exitNotAuthorized = 5
	exitTimedOut      = 27
)

func TestBroker_ValidDevicePublishes(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	cfg := config(t)
	var mu sync.Mutex
	var admitted []broker.Device
	cfg.OnConnect = func(d broker.Device) {
		mu.Lock()
		defer mu.Unlock()
		admitted = append(admitted, d)
	}
	b := open(t, cfg)
	d := newDevice(t)
	if ok, out := publish(t, b, d, telemetry.TelemetryTopic(d.id), `{"v":1}`); !ok {
		t.Fatalf("mosquitto_pub = refused, want PUBACK:\n%s", out)
	}
	if diff := cmp.Diff([]string{`{"v":1}`}, stored(t, b, subj(telemetry.TelemetryTopic(d.id)))); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	leaf := d.leaf(t)
	want := []broker.Device{{ID: d.id, Tenant: tenantA, Product: product, CertNotAfter: leaf.NotAfter, Serial: leaf.SerialNumber.Text(16)}}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, admitted); diff != "" {
		t.Errorf("OnConnect (-want +got):\n%s", diff)
	}
}

// Row 8 and rule 1: only an unexpired certificate of the tenant's CA gets in.
func TestBroker_RejectsBadCertificates(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	p := testPKI(t)
	now := time.Now()
	tests := []struct {
		name string
		dev  func(t testing.TB) *device
		now  func() time.Time
	}{
		{"expired", func(t testing.TB) *device {
			return issueDevice(t, newKey(t), p.caA, p.keyA, tenantA, now.Add(-30*time.Minute), now.Add(-time.Minute))
		}, nil},
		{"not yet valid", func(t testing.TB) *device {
			return issueDevice(t, newKey(t), p.caA, p.keyA, tenantA, now.Add(time.Hour), now.Add(2*time.Hour))
		}, nil},
		// The same certificate as the valid case, against a clock past its end.
		{"expired by the broker's clock", newDevice, func() time.Time { return time.Now().Add(25 * time.Hour) }},
		{"other tenant", func(t testing.TB) *device {
			return issueDevice(t, newKey(t), p.caB, p.keyB, tenantB, now.Add(-time.Hour), now.Add(time.Hour))
		}, nil},
		{"self-signed", selfSigned, nil},
		{"no certificate", func(testing.TB) *device { return nil }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := config(t)
			if tt.now != nil {
				cfg.Now = tt.now
			}
			connected := false
			cfg.OnConnect = func(broker.Device) { connected = true }
			b := open(t, cfg)
			d := tt.dev(t)
			id := strings.Repeat("0", 64)
			if d != nil {
				id = d.id
			}
			args := append(mqttArgs(t, b, d, id, product), "-q", "1", "-t", telemetry.TelemetryTopic(id), "-m", "x")
			if code, out := run(t, "mosquitto_pub", args...); code == 0 {
				t.Fatalf("mosquitto_pub = PUBACK, want refused\n%s", out)
			}
			if n := total(t, b); n != 0 {
				t.Errorf("stream holds %d messages, want 0", n)
			}
			if connected {
				t.Error("OnConnect called")
			}
		})
	}
}

// Row 32: with its own certificate a device can neither take another device's client
// ID (and with it the persistent session) nor gain anything by naming another device as
// user name.
func TestBroker_RejectsClientIDOfAnotherDevice(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	b := open(t, config(t))
	a, other := newDevice(t), newDevice(t)
	for _, cid := range []string{other.id, strings.ToUpper(a.id), a.id + "x", "#", "+", "$SYS"} {
		args := append(mqttArgs(t, b, a, cid, product), "-q", "1", "-t", telemetry.TelemetryTopic(other.id), "-m", "x")
		if code, out := run(t, "mosquitto_pub", args...); code != exitNotAuthorized {
			t.Errorf("client ID %q: mosquitto_pub = %d %q, want %d (not authorised)", cid, code, out, exitNotAuthorized)
		}
	}
	// The user name names the product only; the device is the certificate's.
	args := append(mqttArgs(t, b, a, a.id, other.id), "-q", "1", "-t", telemetry.TelemetryTopic(other.id), "-m", "x")
	if code, out := run(t, "mosquitto_pub", args...); code != 0 {
		t.Fatalf("user name of another device: mosquitto_pub = %d %q, want 0", code, out)
	}
	if n := total(t, b); n != 0 {
		t.Errorf("stream holds %d messages, want 0", n)
	}
}

func TestBroker_RejectsBadProductNames(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	b := open(t, config(t))
	d := newDevice(t)
	for _, user := range []string{"", "DW 100", strings.Repeat("x", 65), "DW100/x", "DW100#"} {
		args := append(mqttArgs(t, b, d, d.id, user), "-q", "1", "-t", telemetry.TelemetryTopic(d.id), "-m", "x")
		if code, out := run(t, "mosquitto_pub", args...); code != exitNotAuthorized {
			t.Errorf("user %q: mosquitto_pub = %d %q, want %d", user, code, out, exitNotAuthorized)
		}
	}
	if n := total(t, b); n != 0 {
		t.Errorf("stream holds %d messages, want 0", n)
	}
}

// Row 33: wildcard and foreign subscriptions get a failure SUBACK and no message, not
// even a retained one or a queued request.
func TestBroker_RejectsWildcards(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	b := open(t, config(t))
	a, victim := newDevice(t), newDevice(t)
	// The victim leaves a retained message and a persistent session with a queued
	// request.
	if ok, out := publish(t, b, victim, telemetry.TelemetryTopic(victim.id), "retained", "-r"); !ok {
		t.Fatalf("retained publish: %s", out)
	}
	if code, out := run(t, "mosquitto_sub", append(mqttArgs(t, b, victim, victim.id, product),
		"-c", "-q", "1", "-E", "-t", telemetry.DiagnosticsFilter(victim.id))...); code != 0 {
		t.Fatalf("victim session: %d %s", code, out)
	}
	publishRequest(t, b, victim.id, "r1")
	for _, f := range []string{
		"#", "+/+/telemetry", "$SYS/#", "devices/#", "devices/+/telemetry", "devices/+/diagnostics/+",
		"devices/" + victim.id + "/#", "devices/" + victim.id + "/telemetry",
		telemetry.DiagnosticsFilter(victim.id), "devices/" + a.id + "/#", telemetry.TelemetryTopic(a.id),
		"$MQTT/sub/#", "$MQTT/msgs/#", "tenants/" + tenantB + "/#",
	} {
		code, out := subscribe(t, b, a, a.id, 5, f)
		if code != 0 || out != denied {
			t.Errorf("subscribe %q = %d %q, want 0 %q", f, code, out, denied)
		}
	}
}

// A device publishing on another device's topics, or a request on its own, is
// PUBACKed (MQTT 3.1.1 has no refusal) and nothing is stored.
func TestBroker_RejectsPublishToAnotherDevice(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	b := open(t, config(t))
	a, other := newDevice(t), newDevice(t)
	for _, topic := range []string{
		telemetry.TelemetryTopic(other.id), telemetry.EventsTopic(other.id), telemetry.ReplyTopic(other.id, "r1"),
		telemetry.DiagnosticsTopic(other.id, "r1"), telemetry.DiagnosticsTopic(a.id, "r1"),
		"devices/" + a.id + "/telemetry/x", "$MQTT/msgs/devices/" + other.id + "/telemetry", "foo",
	} {
		if ok, out := publish(t, b, a, topic, "forged"); !ok {
			t.Logf("publish %q refused: %s", topic, out)
		}
	}
	// A's own message after them: once it is stored, the earlier ones were handled.
	if ok, out := publish(t, b, a, telemetry.EventsTopic(a.id), "own"); !ok {
		t.Fatalf("own publish: %s", out)
	}
	waitFor(t, "own message", func() bool { return total(t, b) > 0 })
	if n := total(t, b); n != 1 {
		t.Errorf("stream holds %d messages, want 1 (only the device's own)", n)
	}
	if got := stored(t, b, subj(telemetry.EventsTopic(a.id))); !cmp.Equal(got, []string{"own"}) {
		t.Errorf("own events = %q, want [own]", got)
	}
}

// Row 34: a device's retained messages and its will reach no one, not another device
// and not the device itself with a new certificate, after the broker closed its
// connection when its certificate expired.
func TestBroker_RetainedAndWillOfExpiredDeviceReachNoOne(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	p := testPKI(t)
	b := open(t, config(t))
	key := newKey(t)
	now := time.Now()
	short := issueDevice(t, key, p.caA, p.keyA, tenantA, now.Add(-time.Hour), now.Add(4*time.Second))
	other := newDevice(t)
	// Retained on every topic it may publish on, and on its own requests (refused).
	for _, topic := range []string{
		telemetry.TelemetryTopic(short.id), telemetry.EventsTopic(short.id), telemetry.ReplyTopic(short.id, "r1"),
		telemetry.DiagnosticsTopic(short.id, "r1"), telemetry.DiagnosticsTopic(other.id, "r1"),
	} {
		publish(t, b, short, topic, "retained", "-r")
	}
	// Connected, with a will on its own request topic (which its next session
	// subscribes to), until the broker closes the connection at the certificate's
	// end. A second device of the same kind leaves its will on its own telemetry, to
	// show that wills do fire at that close, and land only in the stream.
	witness := issueDevice(t, newKey(t), p.caA, p.keyA, tenantA, now.Add(-time.Hour), now.Add(4*time.Second))
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		args := append(mqttArgs(t, b, witness, witness.id, product), "-q", "1", "-t", telemetry.DiagnosticsFilter(witness.id),
			"--will-topic", telemetry.TelemetryTopic(witness.id), "--will-payload", "will", "--will-retain", "--will-qos", "1")
		run(t, "mosquitto_sub", args...)
	})
	args := append(mqttArgs(t, b, short, short.id, product), "-q", "1", "-t", telemetry.DiagnosticsFilter(short.id),
		"--will-topic", telemetry.DiagnosticsTopic(short.id, "w1"), "--will-payload", "will", "--will-retain", "--will-qos", "1")
	code, out := run(t, "mosquitto_sub", args...)
	wg.Wait()
	if code == 0 || time.Since(start) > 15*time.Second {
		t.Fatalf("mosquitto_sub = %d %q after %v, want closed at the certificate's end", code, out, time.Since(start))
	}
	if out != "" && !strings.Contains(out, "not authorised") && !strings.Contains(out, "lost") {
		t.Errorf("mosquitto_sub got %q", out)
	}
	waitFor(t, "the witness's will", func() bool { return total(t, b) == 4 }) // 3 retained of short, 1 will
	if got := stored(t, b, subj(telemetry.TelemetryTopic(witness.id))); !cmp.Equal(got, []string{"will"}) {
		t.Errorf("witness telemetry = %q, want its will", got)
	}
	if code, out := run(t, "mosquitto_sub", append(mqttArgs(t, b, short, short.id, product), "-t", telemetry.DiagnosticsFilter(short.id),
		"--will-topic", telemetry.TelemetryTopic(short.id), "--will-payload", "will", "--will-retain", "--will-qos", "1", "-W", "3")...); code != exitNotAuthorized {
		t.Errorf("expired certificate: mosquitto_sub = %d %q, want not authorised", code, out)
	}

	renewed := issueDevice(t, key, p.caA, p.keyA, tenantA, now.Add(-time.Hour), now.Add(time.Hour))
	for _, f := range []string{telemetry.DiagnosticsFilter(short.id)} {
		if code, out := subscribe(t, b, renewed, renewed.id, 2, f); code != exitTimedOut || out != "Timed out\n" {
			t.Errorf("renewed device subscribes %q = %d %q, want nothing", f, code, out)
		}
	}
	for _, f := range []string{"#", "devices/" + short.id + "/#", telemetry.TelemetryTopic(short.id), "devices/+/telemetry"} {
		for _, d := range []*device{renewed, other} {
			if code, out := subscribe(t, b, d, d.id, 2, f); code != 0 || out != denied {
				t.Errorf("subscribe %q = %d %q, want %q", f, code, out, denied)
			}
		}
	}
	if code, out := subscribe(t, b, other, other.id, 2, telemetry.DiagnosticsFilter(other.id)); code != exitTimedOut {
		t.Errorf("other device's own requests = %d %q, want nothing", code, out)
	}
}

// A QoS 1 message is PUBACKed only once stored in the stream on disk: it is there
// after the broker restarts on the same directory.
func TestBroker_PubAckedSurvivesRestart(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	cfg := config(t)
	b, err := broker.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(t)
	if ok, out := publish(t, b, d, telemetry.TelemetryTopic(d.id), "acked"); !ok {
		t.Fatalf("publish: %s", out)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = open(t, cfg)
	if got := stored(t, b, subj(telemetry.TelemetryTopic(d.id))); !cmp.Equal(got, []string{"acked"}) {
		t.Errorf("after restart: %q, want [acked]", got)
	}
}

// A persistent session (clean session off, QoS 1 subscription) survives a restart and
// gets a request published while the device was offline.
func TestBroker_SessionSurvivesRestart(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	cfg := config(t)
	b, err := broker.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(t)
	if code, out := run(t, "mosquitto_sub", append(mqttArgs(t, b, d, d.id, product),
		"-c", "-q", "1", "-E", "-t", telemetry.DiagnosticsFilter(d.id))...); code != 0 {
		t.Fatalf("subscribe: %d %s", code, out)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.MQTTAddr = "127.0.0.1:0"
	b = open(t, cfg)
	publishRequest(t, b, d.id, "r1")
	// Without -c the session would be cleared on connect; with it, the queued
	// request arrives without subscribing again first.
	code, out := run(t, "mosquitto_sub", append(mqttArgs(t, b, d, d.id, product),
		"-c", "-q", "1", "-v", "-C", "1", "-W", "10", "-t", telemetry.DiagnosticsFilter(d.id))...)
	if want := telemetry.DiagnosticsTopic(d.id, "r1") + " request\n"; code != 0 || out != want {
		t.Errorf("after restart = %d %q, want %q", code, out, want)
	}
}

// Issue 13, "Bad input": a flooding device pushes out only its own oldest messages.
func TestBroker_FloodDropsOnlyOwnMessages(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	cfg := config(t)
	cfg.MaxMsgsPerDevice = 5
	b := open(t, cfg)
	flood, quiet := newDevice(t), newDevice(t)
	publish(t, b, quiet, telemetry.TelemetryTopic(quiet.id), "q0")
	publish(t, b, quiet, telemetry.TelemetryTopic(quiet.id), "q1")
	var lines []string
	for i := range 50 {
		lines = append(lines, "f"+string(rune('A'+i%26))+string(rune('a'+i/26)))
	}
	args := append(mqttArgs(t, b, flood, flood.id, product), "-q", "1", "-t", telemetry.TelemetryTopic(flood.id), "-l")
	if code, out := runInput(t, strings.Join(lines, "\n")+"\n", "mosquitto_pub", args...); code != 0 {
		t.Fatalf("flood: %d %s", code, out)
	}
	waitFor(t, "flood stored", func() bool { return total(t, b) == 7 })
	if got := stored(t, b, subj(telemetry.TelemetryTopic(quiet.id))); !cmp.Equal(got, []string{"q0", "q1"}) {
		t.Errorf("quiet device = %q, want [q0 q1]", got)
	}
	if got := stored(t, b, subj(telemetry.TelemetryTopic(flood.id))); !cmp.Equal(got, lines[45:]) {
		t.Errorf("flooding device = %q, want its last 5 %q", got, lines[45:])
	}
}

// The in-process client cannot speak as a device.
func TestBroker_InternalClientCannotForgeDevice(t *testing.T) {
	t.Parallel()
	b := open(t, config(t))
	d := newDevice(t)
	nc, err := b.Conn()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{telemetry.TelemetryTopic(d.id), telemetry.EventsTopic(d.id), telemetry.ReplyTopic(d.id, "r1")} {
		for _, s := range []string{subj(topic), broker.StoredPrefix + subj(topic)} {
			ctx, cancel := contextTimeout(t, 2*time.Second)
			if _, err := js.Publish(ctx, s, []byte("forged")); err == nil {
				t.Errorf("in-process publish on %s: stored, want refused", s)
			}
			cancel()
		}
	}
	if n := total(t, b); n != 0 {
		t.Errorf("stream holds %d messages, want 0", n)
	}
}
