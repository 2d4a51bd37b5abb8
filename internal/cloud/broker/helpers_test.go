package broker_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moat-iot/moat/internal/cloud/broker"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/telemetry"
)

const (
	tenantA = "tnt_broker_a"
	tenantB = "tnt_broker_b"
	product = "DW100"
)

// pki is a platform root, a device CA for tenants A and B under it, and a TLS CA for the
// broker's own certificate. Everything is valid from an hour ago for a year.
type pki struct {
	dir        string
	rootKey    *ecdsa.PrivateKey
	root       *x509.Certificate
	caA, caB   *x509.Certificate
	keyA, keyB *ecdsa.PrivateKey
	serverCA   string // PEM file the clients trust for the broker
	serverCert tls.Certificate
}

var (
	pkiOnce sync.Once
	pkiVal  *pki
	pkiErr  error
)

// testPKI is made once per test binary: P-256 keys are cheap, but the tests are many.
func testPKI(t testing.TB) *pki {
	t.Helper()
	pkiOnce.Do(func() { pkiVal, pkiErr = newPKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiVal
}

func newPKI() (*pki, error) {
	dir, err := os.MkdirTemp("", "broker-pki")
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	p := &pki{dir: dir}
	if p.rootKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	rootPEM, err := deviceca.NewRootCertificate(p.rootKey, "moat broker test root", now, 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if p.root, err = deviceca.ParseRootCertificate(rootPEM); err != nil {
		return nil, err
	}
	if p.caA, p.keyA, err = p.newCA(tenantA, "dca_a", now); err != nil {
		return nil, err
	}
	if p.caB, p.keyB, err = p.newCA(tenantB, "dca_b", now); err != nil {
		return nil, err
	}
	if err := p.newServerCert(now); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *pki) newCA(tenant, caID string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := deviceca.NewCAKey()
	if err != nil {
		return nil, nil, err
	}
	csrPEM, err := deviceca.NewCSR(key, tenant, caID)
	if err != nil {
		return nil, nil, err
	}
	csr, err := deviceca.ParseCSR(csrPEM)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err := deviceca.SignCA(p.root, p.rootKey, csrPEM, now, 365*24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	cert, err := deviceca.CheckCA(p.root, certPEM, csr, now)
	return cert, key, err
}

func (p *pki) newServerCert(now time.Time) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker test TLS CA"},
		NotBefore: now, NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: now, NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	p.serverCA = filepath.Join(p.dir, "server-ca.pem")
	if err := os.WriteFile(p.serverCA, pemCert(caDER), 0o600); err != nil {
		return err
	}
	p.serverCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return nil
}

// chain is the chain file of tenant A: its CA, then the root.
func (p *pki) chain() []byte { return deviceca.Chain(p.root, p.caA) }

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// device is a device key with a certificate, written as PEM files for mosquitto.
type device struct {
	id       string
	key      *ecdsa.PrivateKey
	certFile string
	keyFile  string
	tlsCert  tls.Certificate
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newDevice makes a device of tenant A valid from an hour ago for a day.
func newDevice(t testing.TB) *device {
	t.Helper()
	p := testPKI(t)
	now := time.Now()
	return issueDevice(t, newKey(t), p.caA, p.keyA, tenantA, now.Add(-time.Hour), now.Add(24*time.Hour))
}

// issueDevice has ca issue a certificate for key from notBefore to notAfter.
func issueDevice(t testing.TB, key *ecdsa.PrivateKey, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tenant string, notBefore, notAfter time.Time) *device {
	t.Helper()
	id := string(identity.IDFromPublicKey(&key.PublicKey))
	der, _, err := deviceca.Issue(ca, caKey, deviceca.IssueRequest{
		DevicePublicKey: &key.PublicKey, TenantID: tenant, DeviceID: id, NotBefore: notBefore, NotAfter: notAfter,
	})
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	return writeDevice(t, key, id, der)
}

// selfSigned is a certificate shaped like a device certificate but signed by the device
// key itself.
func selfSigned(t testing.TB) *device {
	t.Helper()
	key := newKey(t)
	id := string(identity.IDFromPublicKey(&key.PublicKey))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: id, Organization: []string{"tenant " + tenantA}},
		URIs:         []*url.URL{{Scheme: "urn", Opaque: "moat:tenant:" + tenantA + ":device:" + id}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return writeDevice(t, key, id, der)
}

func writeDevice(t testing.TB, key *ecdsa.PrivateKey, id string, der []byte) *device {
	t.Helper()
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	d := &device{id: id, key: key, certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"),
		tlsCert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
	if err := os.WriteFile(d.certFile, pemCert(der), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// syncBuffer collects log lines; shown when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// config is a valid configuration for tenant A with a fresh store.
func config(t testing.TB) broker.Config {
	t.Helper()
	p := testPKI(t)
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker logs:\n%s", logs)
		}
	})
	cfg := broker.DefaultConfig()
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.ServerCert = p.serverCert
	cfg.DeviceCAs = p.chain()
	cfg.TenantID = tenantA
	cfg.StoreDir = t.TempDir()
	cfg.Now = time.Now
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

func open(t testing.TB, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.Open(cfg)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// needMosquitto fails the test in CI when mosquitto-clients are missing and skips it
// elsewhere.
func needMosquitto(t testing.TB) {
	t.Helper()
	for _, c := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(c); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing (apt-get install mosquitto-clients)", c)
			}
			t.Skipf("%s missing", c)
		}
	}
}

// mqttArgs are the connection arguments of d (nil: no client certificate) with client
// ID cid and user name user.
func mqttArgs(t testing.TB, b *broker.Broker, d *device, cid, user string) []string {
	t.Helper()
	_, port, _ := net.SplitHostPort(b.MQTTAddr().String())
	args := []string{"-h", "127.0.0.1", "-p", port, "--cafile", testPKI(t).serverCA, "-V", "mqttv311", "-i", cid}
	if user != "" { // no user name at all otherwise
		args = append(args, "-u", user)
	}
	if d != nil {
		args = append(args, "--cert", d.certFile, "--key", d.keyFile)
	}
	return args
}

// run runs a mosquitto client for at most 20 s and returns its exit code and output.
func run(t testing.TB, name string, args ...string) (int, string) {
	t.Helper()
	return runInput(t, "", name, args...)
}

// runInput is run with stdin.
func runInput(t testing.TB, stdin, name string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return 0, string(out)
}

// publish has d publish msg on topic with QoS 1 and its own ID; true when PUBACKed.
func publish(t testing.TB, b *broker.Broker, d *device, topic, msg string, extra ...string) (bool, string) {
	t.Helper()
	args := append(mqttArgs(t, b, d, d.id, product), "-q", "1", "-t", topic, "-m", msg)
	code, out := run(t, "mosquitto_pub", append(args, extra...)...)
	return code == 0, out
}

// stream returns the device stream.
func stream(t testing.TB, b *broker.Broker) jetstream.Stream {
	t.Helper()
	s, err := streamOf(t, b)
	if err != nil {
		t.Fatalf("Stream(%s) = %v", telemetry.Stream, err)
	}
	return s
}

// streamOf is the broker's telemetry stream, or the error of looking it up.
func streamOf(t testing.TB, b *broker.Broker) (jetstream.Stream, error) {
	t.Helper()
	nc, err := b.Conn()
	if err != nil {
		t.Fatalf("Conn = %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js.Stream(t.Context(), telemetry.Stream)
}

// stored returns the payloads the stream holds for subject (a device subject without
// the stored prefix).
//
// A clustered stream's consumer may find no responder while the cluster still settles its
// leaders (seen on a loaded machine: "nats: no responders available for request"): such a
// read is tried again, for up to 20 s.
func stored(t testing.TB, b *broker.Broker, subject string) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := readStored(t, b, subject)
		if err == nil || !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("read %s: %v", subject, err)
			}
			return got
		}
		time.Sleep(100 * time.Millisecond) // polling for the cluster's leaders, not timing
	}
}

func readStored(t testing.TB, b *broker.Broker, subject string) ([]string, error) {
	s, err := streamOf(t, b)
	if err != nil {
		return nil, err
	}
	c, err := s.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{broker.StoredPrefix + subject}})
	if err != nil {
		return nil, err
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(broker.StoredPrefix+subject))
	if err != nil {
		return nil, err
	}
	n := int(info.State.Subjects[broker.StoredPrefix+subject])
	var got []string
	for range n {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return nil, err
		}
		got = append(got, string(m.Data()))
	}
	return got, nil
}

// total is the number of messages in the stream.
func total(t testing.TB, b *broker.Broker) uint64 {
	t.Helper()
	info, err := stream(t, b).Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func subj(topic string) string { return telemetry.Subject(topic) }

// subscribe has d (with client ID cid) subscribe to filters with QoS 1 and waits up to
// wait seconds for one message. It returns mosquitto_sub's exit code and output.
func subscribe(t testing.TB, b *broker.Broker, d *device, cid string, wait int, filters ...string) (int, string) {
	t.Helper()
	args := append(mqttArgs(t, b, d, cid, product), "-q", "1", "-v", "-C", "1", "-W", fmt.Sprint(wait))
	for _, f := range filters {
		args = append(args, "-t", f)
	}
	return run(t, "mosquitto_sub", args...)
}

// waitFor polls cond until it holds or 10 s have passed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishRequest publishes a diagnostics request as the cloud does: with JetStream on
// the stored subject, so a persistent session gets it later.
func publishRequest(t testing.TB, b *broker.Broker, dev, id string) {
	t.Helper()
	nc, err := b.Conn()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := broker.RequestMsg(dev, id, []byte("request"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatalf("publish request: %v", err)
	}
}

func contextTimeout(t testing.TB, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}

// leaf is d's certificate.
func (d *device) leaf(t testing.TB) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(d.tlsCert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// chainWith is a chain file of the given CAs and the root.
func (p *pki) chainWith(cas ...*x509.Certificate) []byte { return deviceca.Chain(p.root, cas...) }
