package attestation_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/attestation"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

// env is a real server with an OS and an app image published for DW100, whose clock and
// the devices' clocks the test moves together (offset), as time passes for both.
type env struct {
	*testenv.Platform
	os, app testenv.Image
	offset  *atomic.Int64
}

func newEnv(t *testing.T) *env {
	t.Helper()
	offset := new(atomic.Int64)
	p := testenv.NewPlatform(t, testenv.WithConfig(func(c *server.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	}))
	e := &env{Platform: p, offset: offset}
	e.os = p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	e.app = p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	return e
}

// now is the device clock: the server's.
func (e *env) now() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }

// advance moves both clocks to d after the real time.
func (e *env) advance(d time.Duration) { e.offset.Store(int64(d)) }

// config is a device's attestation config measuring the published, signed images, with a
// fresh state directory that does not exist yet. Logs go to a buffer shown if the test fails.
func (e *env) config(t *testing.T, d testenv.Device) (attestation.Config, *testenv.SyncBuffer) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(e.Server.CAPEM) {
		t.Fatal("server CA PEM holds no certificate")
	}
	logs := &testenv.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client logs:\n%s", logs)
		}
	})
	return attestation.Config{
		ServerURL: e.Server.DeviceURL,
		ServerCAs: pool,
		Identity:  d.Key,
		StateDir:  filepath.Join(t.TempDir(), "state"),
		Measure: func(context.Context) ([]attest.Measurement, bool, error) {
			return []attest.Measurement{e.os.Measurement(), e.app.Measurement()}, false, nil
		},
		Now:    e.now,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, logs
}

func newClient(t *testing.T, cfg attestation.Config) *attestation.Client {
	t.Helper()
	c, err := attestation.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.HTTPClient().CloseIdleConnections)
	return c
}

// certs lists the certificates the server issued to the device: one per attestation.
func (e *env) certs(t *testing.T, id string) []client.DeviceCertificate {
	t.Helper()
	page, err := e.Admin.ListDeviceCertificates(context.Background(), e.Tenant, id, client.ListOptions{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return page.Items
}

func serial(c tls.Certificate) string { return fmt.Sprintf("%x", c.Leaf.SerialNumber) }

// storedChain reads the certificates in the state directory's certificate file.
func storedChain(t *testing.T, dir string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, attestation.CertificateFile))
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			t.Fatalf("certificate file holds a %q block", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(data) != 0 {
		t.Fatalf("certificate file has %d bytes after its PEM blocks", len(data))
	}
	return out
}

// waitAttempt waits for the channel from attestation.Attempted to close.
func waitAttempt(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("no attestation attempt: %s", what)
	}
}

func ptr[T any](v T) *T { return &v }
