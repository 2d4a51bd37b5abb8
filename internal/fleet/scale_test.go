package fleet_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// attestRetrying attests d as the agent does after a power cut: it retries after a short
// random pause while the server answers 503 (busy or throttled) or the connection fails
// (under the race detector, with the other packages' tests beside it, a starved server
// closes connections at its read timeouts), until ctx ends. Each try takes a fresh nonce;
// any other answer (a refusal) ends it.
func attestRetrying(ctx context.Context, anon *client.Client, d testenv.Device, ms ...attest.Measurement) (string, error) {
	busy := func(err error) bool {
		var e *client.Error
		if errors.As(err, &e) {
			return e.Status == http.StatusServiceUnavailable
		}
		var ue *url.Error
		return errors.As(err, &ue) // no answer at all: the transport failed
	}
	for {
		n, err := anon.CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: d.ID})
		if err == nil {
			var ev []byte
			if ev, err = attest.Sign(d.Key, attest.Evidence{DeviceID: d.ID, Nonce: n.Nonce, Time: time.Now(), Measurements: ms}); err != nil {
				return "", err
			}
			var is client.Issued
			if is, err = anon.Attest(ctx, ev); err == nil {
				return is.Serial, nil
			}
		}
		if !busy(err) {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("device %s still refused as busy: %w", d.ID, err)
		case <-time.After(time.Duration(100+rand.IntN(400)) * time.Millisecond): // a retry pause, not an assertion
		}
	}
}

// TestAttest_1000Concurrent: a fleet attesting at once gets 1000 certificates with
// distinct serials, each recorded with its device, on both databases (on SQLite under the
// race detector, sqliteFleet and postgresFleet of them: see race_test.go).
//
// Not parallel: the package's parallel tests wait until it is done, so that a thousand
// handshakes at once do not starve their latency bounds.
func TestAttest_1000Concurrent(t *testing.T) {
	// One database after the other: two fleets of 1000 at once would only measure how
	// starved the machine is.
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			n := postgresFleet
			if db == "sqlite" {
				n = sqliteFleet
			}
			var opts []testenv.ServerOption
			if db == "postgres" {
				opts = append(opts, testenv.WithDatabase(testenv.FreshPostgresDatabase(t)))
			}
			p := testenv.NewPlatform(t, opts...)
			osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail")
			devs := make([]testenv.Device, n)
			var wg sync.WaitGroup
			sem := make(chan struct{}, 8)
			for i := range devs {
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					devs[i] = p.NewDevice(false, "")
				})
			}
			wg.Wait()
			ids := make([]string, n)
			for i, d := range devs {
				ids[i] = d.ID
			}
			for i := 0; i < n; i += device.MaxClaim {
				if _, err := p.Admin.ClaimDevices(t.Context(), p.Tenant, client.DeviceClaim{DeviceIDs: ids[i:min(n, i+device.MaxClaim)]}); err != nil {
					t.Fatal(err)
				}
			}
			// All n devices start at once, as after a power cut. The server serves at most
			// its unauthenticated-request cap at a time and answers the rest 503 with
			// Retry-After; each device then retries with a fresh nonce, as the agent does.
			serials := make([]string, n)
			errs := make([]error, n)
			anon := p.Anon()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
			defer cancel()
			start := make(chan struct{})
			for i := range devs {
				wg.Go(func() {
					<-start
					serials[i], errs[i] = attestRetrying(ctx, anon, devs[i], osImg.Measurement())
				})
			}
			close(start)
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("attestations failed: %v", err)
			}
			seen := map[string]bool{}
			for _, s := range serials {
				if s == "" || seen[s] {
					t.Fatalf("serial %q empty or issued twice", s)
				}
				seen[s] = true
			}
			err := p.Server.Store().InReadTx(t.Context(), func(tx store.Tx) error {
				tt, err := tx.ForTenant(tenant.ID(p.Tenant))
				if err != nil {
					return err
				}
				for i, d := range devs {
					certs, err := tt.Certificates().ListForDevice(t.Context(), device.ID(d.ID), 10)
					if err != nil {
						return err
					}
					// Newest first; a try whose answer the connection lost may have issued
					// one more before the one the device received.
					if len(certs) == 0 || certs[0].Serial != serials[i] {
						t.Errorf("device %d: recorded certificates %+v, want serial %s newest", i, certs, serials[i])
						return nil
					}
					dev, err := tt.Devices().Get(t.Context(), device.ID(d.ID))
					if err != nil {
						return err
					}
					if dev.Attestation == nil || dev.Attestation.Serial != serials[i] {
						t.Errorf("device %d: attestation record %+v, want serial %s", i, dev.Attestation, serials[i])
						return nil
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAttest_ChainVerifiesWithOpenSSL: an issued device certificate verifies with openssl,
// an independent verifier, against the chain the tenant downloads for its own cloud.
func TestAttest_ChainVerifiesWithOpenSSL(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is required in CI")
		}
		t.Skip("no openssl")
	}
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	is, err := f.Anon().Attest(t.Context(), f.Evidence(d, false, f.os.Measurement(), f.app.Measurement()))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := f.Admin.GetDeviceCAChain(t.Context(), f.Tenant)
	if err != nil {
		t.Fatal(err)
	}
	certs := splitPEM(t, chain)
	if len(certs) != 2 {
		t.Fatalf("downloaded chain holds %d certificates, want tenant CA and platform root", len(certs))
	}
	leaf := splitPEM(t, []byte(is.ChainPEM))[0]
	dir := t.TempDir()
	write := func(name string, blocks ...[]byte) string {
		var b bytes.Buffer
		for _, der := range blocks {
			pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	root, ca, dev := write("root.pem", certs[1]), write("ca.pem", certs[0]), write("device.pem", leaf)
	out, err := exec.Command(openssl, "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", root, "-untrusted", ca, dev).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// Against another tenant's chain (a CA the platform certified for Fabrikam) it fails.
	ten, err := f.Op.CreateTenant(t.Context(), client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	f.SignPendingCAs()
	other, err := f.Op.GetDeviceCAChain(t.Context(), ten.ID)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := write("fabrikam-ca.pem", splitPEM(t, other)[0])
	if out, err := exec.Command(openssl, "verify", "-purpose", "sslclient", "-CAfile", root, "-untrusted", otherCA, dev).CombinedOutput(); err == nil {
		t.Fatalf("openssl verified Contoso's device against Fabrikam's CA:\n%s", out)
	}
}

func splitPEM(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Bytes)
	}
}

// TestDeviceAPI_OtherTenantsFilesAreNotFound: a device of tenant A, authenticated, cannot
// fetch tenant B's image blob or metadata; its tenant is its certificate's, not the path's.
func TestDeviceAPI_OtherTenantsFilesAreNotFound(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	// Fabrikam publishes an app; its blob exists on the server.
	ten, err := f.Op.CreateTenant(ctx, client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	pkg := f.Pack("app", "secret-app", "1.0.0", 1, "DW100")
	if _, err := f.Op.UploadBlob(ctx, ten.ID, bytes.NewReader(pkg)); err != nil {
		t.Fatal(err)
	}
	sum := sha256Hex(pkg)
	d := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	dc := f.DeviceClient(cert)
	var sink bytes.Buffer
	_, err = dc.GetDeviceTarget(ctx, "apps/secret-app/"+sum+".1.0.0", &sink)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusNotFound || sink.Len() != 0 {
		t.Fatalf("device of Contoso fetching Fabrikam's blob: %v (%d bytes), want 404 and nothing", err, sink.Len())
	}
	// Its own app downloads.
	if _, err := dc.GetDeviceTarget(ctx, "apps/dw100-app/"+f.app.SHA256+".1.0.0", &sink); err != nil || sink.Len() != int(f.app.Length) {
		t.Fatalf("own app: %v, %d bytes", err, sink.Len())
	}
	// A device certificate is not an API token, and a token is not a device certificate.
	_, err = f.Admin.GetAssignment(ctx)
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Errorf("GetAssignment with an admin token = %v, want 401", err)
	}
	_, err = dc.ListDevices(ctx, f.Tenant, client.ListOptions{})
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Errorf("ListDevices with a device certificate = %v, want 401", err)
	}
}
