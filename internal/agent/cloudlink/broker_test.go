package cloudlink_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moat-iot/moat/internal/telemetry"
)

// testDevice is the device ID of the tests.
const testDevice = "4f2a000000000000000000000000000000000000000000000000000000000001"

// pki is a per-test CA with the broker's server certificate and device certificates.
type pki struct {
	t      *testing.T
	caKey  *ecdsa.PrivateKey
	ca     *x509.Certificate
	pool   *x509.CertPool
	server tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{t: t, caKey: key, ca: ca, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.server = p.issue(2, "broker", x509.ExtKeyUsageServerAuth, time.Now().Add(time.Hour))
	return p
}

func (p *pki) issue(serial int64, cn string, usage x509.ExtKeyUsage, notAfter time.Time) tls.Certificate {
	p.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (p *pki) device(serial int64) tls.Certificate {
	return p.issue(serial, testDevice, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour))
}

// broker is an embedded nats-server with its MQTT listener on TLS that requires a client
// certificate from the test CA, JetStream in a directory that outlives a restart, and the
// stream telemetry.Stream: the broker `moat cloud` embeds, without its topic permissions
// (internal/cloud/broker's to test).
type broker struct {
	t    *testing.T
	pki  *pki
	dir  string
	port int // the MQTT port, kept across restarts
	s    *server.Server
	auth *recorder
}

// recorder is the broker's authenticator: it admits a client with a verified certificate
// and records the serials and user names it saw; plain NATS clients (the test's reader,
// no TLS) are admitted too.
type recorder struct {
	mu      sync.Mutex
	serials []int64
	users   []string
}

func (r *recorder) Check(c server.ClientAuthentication) bool {
	cs := c.GetTLSConnectionState()
	if cs != nil && len(cs.PeerCertificates) > 0 {
		r.mu.Lock()
		r.serials = append(r.serials, cs.PeerCertificates[0].SerialNumber.Int64())
		r.users = append(r.users, c.GetOpts().Username)
		r.mu.Unlock()
	}
	c.RegisterUser(&server.User{Username: c.GetOpts().Username})
	return true
}

func (r *recorder) sawSerial(s int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.serials, s)
}

func startBroker(t *testing.T, p *pki) *broker {
	t.Helper()
	b := &broker{t: t, pki: p, dir: t.TempDir(), port: -1, auth: &recorder{}}
	b.start()
	t.Cleanup(b.stop)
	nc := b.reader()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// As internal/cloud/broker does: nats-server's MQTT keeps QoS 1 messages in
	// $MQTT_msgs, which must hold only the cloud's requests for the devices' own stream to
	// capture what they publish under the same prefix.
	for _, sc := range []jetstream.StreamConfig{
		{Name: "$MQTT_msgs", Subjects: []string{telemetry.StoredPrefix + "devices.*.diagnostics.*"}, Storage: jetstream.FileStorage, Retention: jetstream.InterestPolicy},
		{Name: telemetry.Stream, Subjects: telemetry.StreamSubjects, Storage: jetstream.FileStorage},
	} {
		if _, err := js.CreateStream(t.Context(), sc); err != nil {
			t.Fatalf("create stream %s: %v", sc.Name, err)
		}
	}
	return b
}

func (b *broker) start() {
	b.t.Helper()
	opts := &server.Options{
		ServerName: "test", Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.dir,
		NoLog: true, NoSigs: true, CustomClientAuthentication: b.auth,
		MQTT: server.MQTTOpts{Host: "127.0.0.1", Port: b.port, TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{b.pki.server}, ClientCAs: b.pki.pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
		}},
	}
	s, err := server.NewServer(opts)
	if err != nil {
		b.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		b.t.Fatal("broker not ready")
	}
	b.s = s
	b.port = opts.MQTT.Port
}

func (b *broker) stop() {
	if b.s != nil {
		b.s.Shutdown()
		b.s.WaitForShutdown()
		b.s = nil
	}
}

func (b *broker) url() string { return fmt.Sprintf("mqtts://127.0.0.1:%d", b.port) }

func (b *broker) reader() *nats.Conn {
	b.t.Helper()
	nc, err := nats.Connect(b.s.ClientURL())
	if err != nil {
		b.t.Fatal(err)
	}
	return nc
}

// messages returns the stream's messages on subject (a filter), oldest first.
func (b *broker) messages(ctx context.Context, subject string) [][]byte {
	b.t.Helper()
	nc := b.reader()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.t.Fatal(err)
	}
	st, err := js.Stream(ctx, telemetry.Stream)
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	var out [][]byte
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if subjectMatches(subject, strings.TrimPrefix(m.Subject, telemetry.StoredPrefix)) {
			out = append(out, m.Data)
		}
	}
	return out
}

// subjectMatches matches NATS subjects with '*' tokens.
func subjectMatches(filter, subject string) bool {
	f, s := splitDots(filter), splitDots(subject)
	if len(f) != len(s) {
		return false
	}
	for i := range f {
		if f[i] != "*" && f[i] != s[i] {
			return false
		}
	}
	return true
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := range len(s) {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// eventually waits for cond, failing after a deadline: no sleeps that assert timing.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
