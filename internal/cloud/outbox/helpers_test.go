package outbox_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/mailbox"
	"github.com/moat-iot/moat/internal/cloud/outbox"
)

var t0 = time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)

// clock is an injected clock tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func openStore(t *testing.T, path string) *cloudstore.Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "cloud.db")
	}
	s, err := cloudstore.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func newWorker(t *testing.T, s outbox.Store, hs outbox.Handlers, now func() time.Time, reg prometheus.Registerer) *outbox.Worker {
	t.Helper()
	w, err := outbox.New(outbox.Config{Store: s, Handlers: hs, Now: now, Logger: testLogger(t), Registerer: reg,
		Lease: time.Minute, Concurrency: 2})
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	return w
}

func enqueue(t *testing.T, s *cloudstore.Store, at time.Time, kind, key string, payload any) {
	t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueOutbox(t.Context(), at, cloudstore.OutboxItem{Kind: kind, Key: key, Payload: b}); err != nil {
		t.Fatalf("EnqueueOutbox(%s) = %v", key, err)
	}
}

func row(t *testing.T, s *cloudstore.Store, key string) cloudstore.OutboxRow {
	t.Helper()
	rows, err := s.ListOutbox(t.Context(), cloudstore.OutboxFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Key == key {
			return r
		}
	}
	t.Fatalf("no outbox row %s", key)
	return cloudstore.OutboxRow{}
}

// testPKI is a per-test CA with a server certificate for 127.0.0.1 and localhost.
type testPKI struct {
	caFile string
	pool   *x509.CertPool
	server tls.Certificate
}

func newPKI(t testing.TB, dir string) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outbox test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "mail.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{caFile: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool(),
		server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
	p.pool.AddCert(caCert)
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p testPKI) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
}

// startMailbox runs a mailbox that requires STARTTLS with the PKI's certificate.
func startMailbox(t *testing.T, p testPKI, refuseFirst int) *mailbox.Mailbox {
	t.Helper()
	mb, err := mailbox.Start(t.Context(), mailbox.Config{Addr: "127.0.0.1:0", TLSConfig: p.serverTLS(), RequireTLS: true,
		RefuseFirst: refuseFirst, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	return mb
}

func newMailer(t testing.TB, addr, caFile string) *outbox.SMTPMailer {
	t.Helper()
	m, err := outbox.NewSMTPMailer(outbox.SMTPConfig{Addr: addr, From: "moat@cloud.example", CAFile: caFile, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("NewSMTPMailer = %v", err)
	}
	return m
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
