package broker_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/moat-iot/moat/internal/cloud/broker"
	"github.com/moat-iot/moat/internal/telemetry"
)

// pahoClient connects d to b with paho (the agent's MQTT library).
func pahoClient(t testing.TB, b *broker.Broker, d *device, clean bool) (mqtt.Client, error) {
	t.Helper()
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(testPKI(t).serverCA)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + b.MQTTAddr().String()).
		SetClientID(d.id).
		SetUsername(product).
		SetCleanSession(clean).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).
		SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{d.tlsCert}, MinVersion: tls.VersionTLS12})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		t.Fatal("paho connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func TestBroker_PahoPublishes(t *testing.T) {
	t.Parallel()
	b := open(t, config(t))
	d := newDevice(t)
	c, err := pahoClient(t, b, d, true)
	if err != nil {
		t.Fatalf("paho connect = %v", err)
	}
	tok := c.Publish(telemetry.TelemetryTopic(d.id), 1, false, []byte(`{"v":1}`))
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho publish = %v", tok.Error())
	}
	if diff := cmp.Diff([]string{`{"v":1}`}, stored(t, b, subj(telemetry.TelemetryTopic(d.id)))); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	// SUBACK codes as paho reads them: own requests QoS 1, the rest 0x80.
	sub := c.SubscribeMultiple(map[string]byte{
		telemetry.DiagnosticsFilter(d.id): 1, "#": 1, "devices/+/telemetry": 1, telemetry.TelemetryTopic(d.id): 1,
	}, nil)
	if !sub.WaitTimeout(10 * time.Second) {
		t.Fatal("subscribe timed out")
	}
	want := map[string]byte{telemetry.DiagnosticsFilter(d.id): 1, "#": 0x80, "devices/+/telemetry": 0x80, telemetry.TelemetryTopic(d.id): 0x80}
	if diff := cmp.Diff(want, sub.(*mqtt.SubscribeToken).Result()); diff != "" {
		t.Errorf("SUBACK (-want +got):\n%s", diff)
	}
}

// A NATS client on the only port there is (MQTT over TLS) gets nowhere.
func TestBroker_RejectsNATSClients(t *testing.T) {
	t.Parallel()
	b := open(t, config(t))
	for _, u := range []string{"nats://" + b.MQTTAddr().String(), "tls://" + b.MQTTAddr().String()} {
		nc, err := nats.Connect(u, nats.Timeout(3*time.Second), nats.UserInfo("moat-cloud-internal", "guess"),
			nats.Secure(&tls.Config{InsecureSkipVerify: true}), nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Errorf("nats.Connect(%s) = connected, want refused", u)
		}
	}
}

// A chain file with a CA of another tenant is refused at start-up: the broker serves
// one tenant.
func TestOpen_RejectsCAOfAnotherTenant(t *testing.T) {
	t.Parallel()
	p := testPKI(t)
	cfg := config(t)
	cfg.DeviceCAs = p.chainWith(p.caA, p.caB)
	if _, err := broker.Open(cfg); err == nil {
		t.Fatal("Open = nil, want an error for the CA of tenant B")
	}
	cfg.TenantID = tenantB
	cfg.DeviceCAs = p.chainWith(p.caA)
	if _, err := broker.Open(cfg); err == nil {
		t.Fatal("Open = nil, want an error for a chain of tenant A for tenant B")
	}
}
