package fleet_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestDeviceAPI_RejectsBadClientCertificates is ATTACKS row 8 against the real device API
// over mutual TLS: every device route (from the route table) refuses, with 401, a device
// certificate that is expired, not yet valid, of another tenant (a CA the platform root
// really certified, for another tenant, naming this device; and the same CA naming the
// other tenant), or revoked (the device blocked; ended by a refused attestation;
// superseded by the device's next certificate). The device's current certificate works
// on every route before and after.
func TestDeviceAPI_RejectsBadClientCertificates(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	good := f.os.Measurement()
	app := f.app.Measurement()
	fab, err := f.Op.CreateTenant(ctx, client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	f.SignPendingCAs()

	type variant struct {
		name string
		cert func(t *testing.T) (tls.Certificate, func()) // the certificate, and what to undo afterwards
	}
	current := func(t *testing.T) (testenv.Device, tls.Certificate) {
		d := f.NewDevice(true, "DW100/Production")
		cert, err := f.Attest(d, good, app)
		if err != nil {
			t.Fatal(err)
		}
		return d, cert
	}
	variants := []variant{
		{"expired", func(t *testing.T) (tls.Certificate, func()) {
			_, cert := current(t)
			f.offset.Store(int64(25 * time.Hour))
			return cert, func() { f.offset.Store(0) }
		}},
		{"not yet valid", func(t *testing.T) (tls.Certificate, func()) {
			_, cert := current(t)
			f.offset.Store(int64(-time.Hour))
			return cert, func() { f.offset.Store(0) }
		}},
		{"other tenant's CA naming this tenant's device", func(t *testing.T) (tls.Certificate, func()) {
			d, _ := current(t)
			return f.certifiedFor(t, fab.ID, d), func() {}
		}},
		{"self-made platform root and tenant CA", func(t *testing.T) (tls.Certificate, func()) {
			d, _ := current(t)
			return f.ForgedCertificate(d), func() {}
		}},
		{"revoked: device blocked", func(t *testing.T) (tls.Certificate, func()) {
			d, cert := current(t)
			f.Update(d.ID, client.DeviceUpdate{Blocked: ptr(true)})
			return cert, func() {}
		}},
		{"revoked: refused attestation", func(t *testing.T) (tls.Certificate, func()) {
			d, cert := current(t)
			m := f.app.Measurement()
			m.SHA256 = strings.Repeat("ab", 32)
			if _, err := f.Attest(d, good, m); err == nil {
				t.Fatal("attestation with a tampered app accepted")
			}
			return cert, func() {}
		}},
		{"revoked: superseded", func(t *testing.T) (tls.Certificate, func()) {
			d, old := current(t)
			if _, err := f.Attest(d, good, app); err != nil {
				t.Fatal(err)
			}
			f.offset.Store(int64(time.Minute)) // past the renewal grace: a new connection with the old certificate is a clone
			return old, func() { f.offset.Store(0) }
		}},
	}
	routes := deviceRoutes(t)
	for _, v := range variants {
		// Not parallel: some variants move the server's clock.
		t.Run(v.name, func(t *testing.T) {
			cert, undo := v.cert(t)
			defer undo()
			hc := f.DeviceHTTPClient(cert)
			hc.Timeout = 30 * time.Second
			for _, rt := range routes {
				if st := call(t, ctx, f.Server.URL, hc, rt); st != http.StatusUnauthorized {
					t.Errorf("%s %s with a certificate %s = %d, want 401", rt.Method, rt.path, v.name, st)
				}
			}
		})
	}
	// The device's current certificate works on every route (none of the 401s above came
	// from a route that refuses everyone).
	_, cert := current(t)
	hc := f.DeviceHTTPClient(cert)
	for _, rt := range routes {
		if st := call(t, ctx, f.Server.URL, hc, rt); st == http.StatusUnauthorized || st >= 500 {
			t.Errorf("%s %s with the current certificate = %d", rt.Method, rt.path, st)
		}
	}
}

// deviceRoute is a device-API route with its path filled in and a body it accepts.
type deviceRoute struct {
	Method, path string
	body         string
}

// deviceRoutes lists every AuthDevice route of the route table.
func deviceRoutes(t *testing.T) []deviceRoute {
	t.Helper()
	param := regexp.MustCompile(`\{([a-z_]+)(?:\.\.\.)?\}`)
	vals := map[string]string{"file": "timestamp.json", "target": "apps/dw100-app/" + strings.Repeat("ab", 32) + ".1.0.0"}
	bodies := map[string]string{
		"waitForUpdates":     `{"since":"0"}`,
		"createErrorReports": `{"reports":[]}`,
		"createUpdateStates": `{"reports":[]}`,
	}
	var out []deviceRoute
	for _, rt := range mgmt.Routes() {
		if rt.Auth != mgmt.AuthDevice {
			continue
		}
		path := param.ReplaceAllStringFunc(rt.Pattern, func(m string) string {
			v, ok := vals[strings.TrimSuffix(m[1:len(m)-1], "...")]
			if !ok {
				t.Fatalf("device route %s: no value for %s; add one to this test", rt.Pattern, m)
			}
			return v
		})
		body, ok := bodies[rt.OperationID]
		if rt.Request != nil && !ok {
			t.Fatalf("device route %s: no body; add one to this test", rt.OperationID)
		}
		out = append(out, deviceRoute{Method: rt.Method, path: path, body: body})
	}
	if len(out) < 7 {
		t.Fatalf("%d device routes in the table, want at least 7", len(out))
	}
	return out
}

func call(t *testing.T, ctx context.Context, base string, hc *http.Client, rt deviceRoute) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, rt.Method, base+rt.path, bytes.NewReader([]byte(rt.body)))
	if err != nil {
		t.Fatal(err)
	}
	if rt.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", rt.Method, rt.path, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// certifiedFor is a certificate for d issued by a device CA that the platform root really
// certified, for tenant (not d's): a CA the server does not hold, as another tenant's
// leaked CA key would be.
func (f *fleet) certifiedFor(t *testing.T, tenant string, d testenv.Device) tls.Certificate {
	t.Helper()
	caKey, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := deviceca.NewCSR(caKey, tenant, "dca_leaked")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := deviceca.SignCA(f.RootCert, f.RootKey, csr, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, _, err := deviceca.Issue(ca, caKey, deviceca.IssueRequest{DevicePublicKey: d.Key.Public(), TenantID: tenant, DeviceID: d.ID,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(30 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	chain := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) + string(caPEM)
	cert, err := testenv.TLSCertificate(t, chain, d.Key)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
