package attestation_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/attestation"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/identity"
)

// TestCertificate_AttestsAndAuthenticates: the device attests at its first connection,
// the certificate identifies it on the device API (rule 1: no certificate, no cloud), and
// the chain is stored 0600 in a 0700 state directory.
func TestCertificate_AttestsAndAuthenticates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	d := e.NewDevice(true, "DW100/Production")
	cfg, logs := e.config(t, d)
	c := newClient(t, cfg)

	// The handshake of the first request attests.
	api, err := client.New(e.Server.DeviceURL, client.WithHTTPClient(c.HTTPClient()))
	if err != nil {
		t.Fatal(err)
	}
	self, err := api.GetDeviceSelf(ctx)
	if err != nil || self.ID != d.ID || self.TenantID != e.Tenant {
		t.Fatalf("GetDeviceSelf through HTTPClient() = %+v, %v; want device %s of %s", self, err, d.ID, e.Tenant)
	}
	if self, err := c.API().GetDeviceSelf(ctx); err != nil || self.ID != d.ID {
		t.Fatalf("API().GetDeviceSelf = %+v, %v; want device %s", self, err, d.ID)
	}
	cert, err := c.Certificate(ctx)
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	if !d.Key.Public().Equal(cert.Leaf.PublicKey) {
		t.Error("certificate is not for the device's identity key")
	}
	if life := cert.Leaf.NotAfter.Sub(e.now()); life < 23*time.Hour || life > 25*time.Hour {
		t.Errorf("certificate lifetime %s, want 24h", life)
	}
	certs := e.certs(t, d.ID)
	if len(certs) != 1 || certs[0].Serial != serial(cert) || len(certs[0].Images) != 2 {
		t.Fatalf("issued certificates %+v, want one, serial %s, with the two measured images", certs, serial(cert))
	}

	// A client built on TLSConfig presents the same certificate.
	tcfg := c.TLSConfig()
	if tcfg.MinVersion < tls.VersionTLS12 || tcfg.RootCAs != cfg.ServerCAs || tcfg.GetClientCertificate == nil || tcfg.InsecureSkipVerify {
		t.Errorf("TLSConfig() = MinVersion %x, RootCAs %p (want %p), GetClientCertificate set %v, InsecureSkipVerify %v",
			tcfg.MinVersion, tcfg.RootCAs, cfg.ServerCAs, tcfg.GetClientCertificate != nil, tcfg.InsecureSkipVerify)
	}
	tr := &http.Transport{TLSClientConfig: tcfg}
	defer tr.CloseIdleConnections()
	own, err := client.New(e.Server.DeviceURL, client.WithHTTPClient(&http.Client{Transport: tr}))
	if err != nil {
		t.Fatal(err)
	}
	if self, err := own.GetDeviceSelf(ctx); err != nil || self.ID != d.ID {
		t.Fatalf("GetDeviceSelf through TLSConfig() = %+v, %v; want device %s", self, err, d.ID)
	}
	if n := len(e.certs(t, d.ID)); n != 1 {
		t.Errorf("%d certificates issued, want 1: a valid certificate is reused", n)
	}

	// The state.
	if fi, err := os.Stat(cfg.StateDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	ents, err := os.ReadDir(cfg.StateDir)
	if err != nil || len(ents) != 1 || ents[0].Name() != attestation.CertificateFile {
		t.Errorf("state directory holds %v (%v), want only %s", ents, err, attestation.CertificateFile)
	}
	fi, err := os.Stat(filepath.Join(cfg.StateDir, attestation.CertificateFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("certificate file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	chain := storedChain(t, cfg.StateDir)
	if len(chain) != 2 || len(cert.Certificate) != 2 {
		t.Fatalf("stored chain has %d certificates, returned %d; want 2 (device, tenant CA)", len(chain), len(cert.Certificate))
	}
	for i := range chain {
		if !bytes.Equal(chain[i].Raw, cert.Certificate[i]) {
			t.Errorf("stored certificate %d differs from the one presented", i)
		}
	}
	if !chain[1].IsCA || chain[0].CheckSignatureFrom(chain[1]) != nil {
		t.Error("the stored chain's second certificate is not the CA that signed the first")
	}
	if s := logs.String(); strings.Contains(s, "CERTIFICATE") || !strings.Contains(s, serial(cert)) {
		t.Errorf("logs must name the serial and hold no certificate:\n%s", s)
	}
}

// TestCertificate_RenewsAfterTwoThirdsOfLifetime: a certificate is reused until two
// thirds of its lifetime (plus at most 1/50 jitter) and renewed after; an HTTP client on
// the Client presents the fresh one even on a connection pooled before expiry.
func TestCertificate_RenewsAfterTwoThirdsOfLifetime(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	d := e.NewDevice(true, "DW100/Production")
	cfg, _ := e.config(t, d)
	c := newClient(t, cfg)

	first, err := c.Certificate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.API().GetDeviceSelf(ctx); err != nil { // leaves a pooled connection
		t.Fatal(err)
	}
	e.advance(15 * time.Hour)
	if got, err := c.Certificate(ctx); err != nil || serial(got) != serial(first) {
		t.Fatalf("Certificate at 15h of 24h = %v, %v; want the first certificate %s", got.Leaf, err, serial(first))
	}
	if n := len(e.certs(t, d.ID)); n != 1 {
		t.Fatalf("%d certificates at 15h, want 1", n)
	}

	e.advance(18 * time.Hour) // past 16h + 24h/50 of jitter
	if _, err := c.API().GetDeviceSelf(ctx); err != nil {
		t.Fatalf("GetDeviceSelf at 18h: %v", err)
	}
	second, err := c.Certificate(ctx)
	if err != nil || serial(second) == serial(first) {
		t.Fatalf("Certificate at 18h = %v, %v; want a new certificate", second.Leaf, err)
	}
	if certs := e.certs(t, d.ID); len(certs) != 2 || certs[0].Serial != serial(second) {
		t.Fatalf("certificates at 18h: %+v, want 2, newest %s", certs, serial(second))
	}
	if chain := storedChain(t, cfg.StateDir); !bytes.Equal(chain[0].Raw, second.Certificate[0]) {
		t.Error("the certificate file still holds the first certificate")
	}

	// Past the second certificate's expiry with no renewal in between: the pooled
	// connection presented the second certificate, which the server now refuses. The
	// request renews first and drops that connection.
	e.advance(18*time.Hour + 25*time.Hour)
	if self, err := c.API().GetDeviceSelf(ctx); err != nil || self.ID != d.ID {
		t.Fatalf("GetDeviceSelf after expiry = %+v, %v; want the device, with a renewed certificate", self, err)
	}
	if n := len(e.certs(t, d.ID)); n != 3 {
		t.Errorf("%d certificates after expiry, want 3", n)
	}
}

// TestCertificate_NewClientAttestsAgain: a new process is a reboot; it attests even though
// the state directory holds a valid certificate.
func TestCertificate_NewClientAttestsAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	d := e.NewDevice(true, "DW100/Production")
	cfg, _ := e.config(t, d)
	first, err := newClient(t, cfg).Certificate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := newClient(t, cfg).Certificate(ctx)
	if err != nil || serial(second) == serial(first) {
		t.Fatalf("Certificate after restart = %v, %v; want a new certificate", second.Leaf, err)
	}
	if n := len(e.certs(t, d.ID)); n != 2 {
		t.Errorf("%d certificates, want 2", n)
	}
	if chain := storedChain(t, cfg.StateDir); !bytes.Equal(chain[0].Raw, second.Certificate[0]) {
		t.Error("the certificate file holds the certificate from before the restart")
	}
}

// TestCertificate_RefusedKeepsNothing: a refusal is ErrRefused with the server's 403, and
// the device holds no certificate afterwards, in memory or on disk, even one still valid
// (rule 1).
func TestCertificate_RefusedKeepsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	refused := func(t *testing.T, c *attestation.Client, dir string) {
		t.Helper()
		ctx := t.Context()
		_, err := c.Certificate(ctx)
		if !errors.Is(err, attestation.ErrRefused) {
			t.Fatalf("Certificate = %v, want ErrRefused", err)
		}
		if ce, ok := errors.AsType[*client.Error](err); !ok || ce.Status != http.StatusForbidden || ce.Code != "attestation_refused" {
			t.Errorf("Certificate = %v, want it to wrap the server's 403 attestation_refused", err)
		}
		if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
			t.Errorf("state directory holds %v (%v), want nothing", ents, err)
		}
		if _, err := c.Certificate(ctx); !errors.Is(err, attestation.ErrRefused) {
			t.Errorf("second Certificate = %v, want ErrRefused", err)
		}
		if _, err := c.API().GetDeviceSelf(ctx); !errors.Is(err, attestation.ErrRefused) {
			t.Errorf("GetDeviceSelf = %v, want ErrRefused", err)
		}
	}

	t.Run("blocked device", func(t *testing.T) {
		d := e.NewDevice(true, "DW100/Production")
		e.Update(d.ID, client.DeviceUpdate{Blocked: ptr(true)})
		cfg, _ := e.config(t, d)
		refused(t, newClient(t, cfg), cfg.StateDir)
		if rec, err := e.Admin.GetDevice(t.Context(), e.Tenant, d.ID); err != nil || rec.Attestation == nil || rec.Attestation.Refusal != "blocked" {
			t.Errorf("device record attestation = %+v, %v; want refusal blocked", rec.Attestation, err)
		}
	})
	t.Run("unsigned app", func(t *testing.T) {
		d := e.NewDevice(true, "DW100/Production")
		cfg, _ := e.config(t, d)
		forged := e.app.Measurement()
		forged.SHA256 = strings.Repeat("ab", 32)
		cfg.Measure = func(context.Context) ([]attest.Measurement, bool, error) {
			return []attest.Measurement{e.os.Measurement(), forged}, false, nil
		}
		refused(t, newClient(t, cfg), cfg.StateDir)
		if n := len(e.certs(t, d.ID)); n != 0 {
			t.Errorf("%d certificates issued, want 0", n)
		}
	})
	t.Run("measure fails", func(t *testing.T) {
		d := e.NewDevice(true, "DW100/Production")
		cfg, _ := e.config(t, d)
		broken := errors.New("slot unreadable")
		cfg.Measure = func(context.Context) ([]attest.Measurement, bool, error) { return nil, false, broken }
		_, err := newClient(t, cfg).Certificate(t.Context())
		if !errors.Is(err, broken) || errors.Is(err, attestation.ErrRefused) {
			t.Errorf("Certificate = %v, want the Measure error and not ErrRefused", err)
		}
	})
	// Last: it moves the clocks.
	t.Run("refused at renewal", func(t *testing.T) {
		d := e.NewDevice(true, "DW100/Production")
		cfg, _ := e.config(t, d)
		c := newClient(t, cfg)
		if _, err := c.Certificate(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.Update(d.ID, client.DeviceUpdate{Blocked: ptr(true)})
		e.advance(18 * time.Hour) // due for renewal, not expired
		defer e.advance(0)
		refused(t, c, cfg.StateDir)
	})
}

// TestCertificate_NetworkErrorIsNotRefusal: an unreachable server is a network error that
// callers tell from a refusal; nothing is stored, and the next attempt waits for the
// backoff.
func TestCertificate_NetworkErrorIsNotRefusal(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	key, err := identity.CreateFileKey(filepath.Join(t.TempDir(), "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	var measured atomic.Int32
	cfg := attestation.Config{
		ServerURL: "https://" + addr,
		ServerCAs: x509.NewCertPool(),
		Identity:  key,
		StateDir:  filepath.Join(t.TempDir(), "state"),
		Measure: func(context.Context) ([]attest.Measurement, bool, error) {
			measured.Add(1)
			return nil, false, nil
		},
		Now: time.Now,
	}
	c := newClient(t, cfg)
	_, err = c.Certificate(t.Context())
	if _, ok := errors.AsType[net.Error](err); !ok || errors.Is(err, attestation.ErrRefused) {
		t.Fatalf("Certificate = %v, want a net.Error that is not ErrRefused", err)
	}
	n, retryAt := attestation.Failures(c)
	if wait := time.Until(retryAt); n != 1 || wait <= 0 || wait > attestation.MinBackoff {
		t.Errorf("after one failure: %d failures, retry in %s; want 1, within %s", n, wait, attestation.MinBackoff)
	}
	if _, err2 := c.Certificate(t.Context()); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("Certificate during the backoff = %v, want the last failure %v", err2, err)
	}
	if n, _ := attestation.Failures(c); n != 1 {
		t.Errorf("Certificate during the backoff attempted again: %d failures", n)
	}
	if ents, err := os.ReadDir(cfg.StateDir); err != nil || len(ents) != 0 {
		t.Errorf("state directory holds %v (%v), want nothing", ents, err)
	}
}

// TestCertificate_ConcurrentCallersShareOneAttestation: 20 goroutines asking at once, by
// Certificate or by requests whose handshakes need a certificate, cause one attestation.
func TestCertificate_ConcurrentCallersShareOneAttestation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := e.NewDevice(true, "DW100/Production")
	cfg, _ := e.config(t, d)
	var measured atomic.Int32
	measure := cfg.Measure
	cfg.Measure = func(ctx context.Context) ([]attest.Measurement, bool, error) {
		measured.Add(1)
		return measure(ctx)
	}

	concurrently := func(f func() (string, error)) []string {
		start := make(chan struct{})
		out := make([]string, 20)
		errs := make([]error, 20)
		var wg sync.WaitGroup
		for i := range out {
			wg.Go(func() {
				<-start
				out[i], errs[i] = f()
			})
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		return out
	}

	c := newClient(t, cfg)
	serials := concurrently(func() (string, error) {
		cert, err := c.Certificate(t.Context())
		if err != nil {
			return "", err
		}
		return serial(cert), nil
	})
	for _, s := range serials {
		if s != serials[0] {
			t.Fatalf("callers got different certificates: %v", serials)
		}
	}
	if n := len(e.certs(t, d.ID)); n != 1 || measured.Load() != 1 {
		t.Errorf("20 concurrent Certificate calls: %d certificates, %d measurements; want 1 and 1", n, measured.Load())
	}

	c2 := newClient(t, cfg) // a restart: its first handshakes must attest, once
	concurrently(func() (string, error) {
		self, err := c2.API().GetDeviceSelf(t.Context())
		return self.ID, err
	})
	if n := len(e.certs(t, d.ID)); n != 2 || measured.Load() != 2 {
		t.Errorf("20 concurrent requests: %d certificates in all, %d measurements; want 2 and 2", n, measured.Load())
	}
}

// TestConfig_Validate: every missing field is reported at once; an insecure URL or a
// state directory others may write is refused.
func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	err := attestation.Config{}.Validate()
	if u, ok := err.(interface{ Unwrap() []error }); !ok || len(u.Unwrap()) != 6 {
		t.Errorf("Config{}.Validate() = %v, want 6 joined problems", err)
	}
	if _, err := attestation.New(attestation.Config{}); err == nil {
		t.Error("New(Config{}) succeeded")
	}
	key, err := identity.CreateFileKey(filepath.Join(t.TempDir(), "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	good := attestation.Config{
		ServerURL: "https://moat.example.com", ServerCAs: x509.NewCertPool(), Identity: key,
		StateDir: filepath.Join(t.TempDir(), "state"), Now: time.Now,
		Measure: func(context.Context) ([]attest.Measurement, bool, error) { return nil, false, nil },
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate() = %v for a complete config", err)
	}
	for _, u := range []string{"http://moat.example.com", "https://", "https://user@moat.example.com", "moat.example.com", "https://moat.example.com/?x=1"} {
		bad := good
		bad.ServerURL = u
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate() accepted server URL %q", u)
		}
	}
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.StateDir = open
	if _, err := attestation.New(bad); err == nil {
		t.Error("New accepted a state directory writable by others")
	}
}

// TestSchedule: renewal falls in [2/3, 2/3 + 1/50] of the lifetime, before expiry; the
// backoff doubles from 1 s, stays in the upper half of its step and is capped at 5 min.
func TestSchedule(t *testing.T) {
	t.Parallel()
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, life := range []time.Duration{5 * time.Minute, 24 * time.Hour, 30 * 24 * time.Hour} {
		lo := start.Add(life / 3 * 2)
		hi := lo.Add(life / 50)
		for range 1000 {
			at := attestation.RenewAt(start, start.Add(life))
			if at.Before(lo) || !at.Before(hi) || !at.Before(start.Add(life)) {
				t.Fatalf("RenewAt(start, start+%s) = start+%s, want in [%s, %s)", life, at.Sub(start), lo.Sub(start), hi.Sub(start))
			}
		}
	}
	if at := attestation.RenewAt(start, start.Add(-time.Hour)); !at.Equal(start) {
		t.Errorf("RenewAt of an expired certificate = %s, want start (at once)", at)
	}
	for n := 1; n <= 100; n++ {
		step := attestation.MaxBackoff
		if n < 20 {
			step = min(attestation.MinBackoff<<(n-1), attestation.MaxBackoff)
		}
		for range 100 {
			if d := attestation.Backoff(n); d < step/2 || d > step {
				t.Fatalf("Backoff(%d) = %s, want in [%s, %s]", n, d, step/2, step)
			}
		}
	}
}

// TestDeps: the attestation client stays small enough for a device; it links no
// server-side package (STYLE, Layout).
func TestDeps(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, banned := range []string{"/internal/server", "/internal/api", "/internal/store", "/internal/cli", "/internal/repo", "/internal/fleet", "/internal/deviceca", "/internal/testenv"} {
			if strings.HasPrefix(dep, "github.com/moat-iot/moat"+banned) {
				t.Errorf("attestation links %s", dep)
			}
		}
	}
}
