package fleet_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/capability"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

// fleet is a platform with one OS and one app published and the app deployed to
// DW100/Production, on a server whose clock the test can move.
type fleet struct {
	*testenv.Platform
	os, app testenv.Image
	offset  *atomic.Int64 // added to the server's clock
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	offset := new(atomic.Int64)
	p := testenv.NewPlatform(t, testenv.WithConfig(func(c *server.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	}))
	f := &fleet{Platform: p, offset: offset}
	f.os = p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	f.app = p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	f.deploy("Production", f.app.Path)
	return f
}

func (f *fleet) group(name string) client.DeviceGroup {
	gs, err := f.Admin.ListDeviceGroups(context.Background(), f.Tenant, f.Product, client.ListOptions{Name: name})
	if err != nil || len(gs.Items) != 1 {
		panic("no group " + name)
	}
	return gs.Items[0]
}

func (f *fleet) deploy(group, target string) {
	g := f.group(group)
	if _, err := f.Admin.CreateDeployment(context.Background(), f.Tenant, f.Product, g.ID, client.DeploymentCreate{Target: target}); err != nil {
		panic(err)
	}
}

func (f *fleet) record(t *testing.T, id string) client.Device {
	t.Helper()
	d, err := f.Admin.GetDevice(context.Background(), f.Tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *fleet) directorKey(t *testing.T) *ecdsa.PublicKey {
	t.Helper()
	ok, err := f.Op.GetOnlineKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	k, err := keys.ParsePublicPEM([]byte(ok.PublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAttest_IssuesCertificateForGenuineSoftware is the whole path of rule 1: a claimed
// device that booted signed images gets a certificate, is identified by it on the device
// API, and is assigned its group's images, signed by the director key.
func TestAttest_IssuesCertificateForGenuineSoftware(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if life := time.Until(cert.Leaf.NotAfter); life < 23*time.Hour || life > 25*time.Hour {
		t.Errorf("certificate lifetime %s, want 24h", life)
	}
	// The profile (ATTACKS row 7): issued by the tenant's own CA, naming the device.
	chain, err := f.Admin.GetDeviceCAChain(ctx, f.Tenant)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(splitPEM(t, chain)[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Leaf.CheckSignatureFrom(ca); err != nil || cert.Leaf.Subject.CommonName != d.ID ||
		len(cert.Leaf.URIs) != 1 || cert.Leaf.URIs[0].String() != "urn:moat:tenant:"+f.Tenant+":device:"+d.ID ||
		len(cert.Leaf.ExtKeyUsage) != 1 || cert.Leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.Leaf.IsCA {
		t.Errorf("certificate profile: issuer check %v, CN %q, URIs %v, EKU %v, CA %t", err, cert.Leaf.Subject.CommonName, cert.Leaf.URIs, cert.Leaf.ExtKeyUsage, cert.Leaf.IsCA)
	}
	dc := f.DeviceClient(cert)
	self, err := dc.GetDeviceSelf(ctx)
	if err != nil || self.ID != d.ID || self.TenantID != f.Tenant {
		t.Fatalf("GetDeviceSelf = %+v, %v; want device %s of %s", self, err, d.ID, f.Tenant)
	}
	raw, err := dc.GetAssignment(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, err := director.Verify(raw, f.directorKey(t), director.Expect{DeviceID: d.ID, TenantID: f.Tenant, Now: time.Now()})
	if err != nil {
		t.Fatalf("assignment does not verify: %v", err)
	}
	if len(a.Images) != 2 || a.Images[0].Path != f.os.Path || a.Images[1].Path != f.app.Path || a.Images[1].SHA256 != f.app.SHA256 {
		t.Errorf("assignment images %+v, want %s and %s", a.Images, f.os.Path, f.app.Path)
	}
	raw2, err := dc.GetAssignment(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := director.Verify(raw2, f.directorKey(t), director.Expect{DeviceID: d.ID, TenantID: f.Tenant, Now: time.Now(), LastCounter: a.Counter}); err != nil {
		t.Errorf("second assignment: %v (the counter must increase)", err)
	}
	if _, err := dc.GetDeviceTUFFile(ctx, "timestamp.json"); err != nil {
		t.Errorf("device cannot read its tenant's TUF metadata: %v", err)
	}
	rec := f.record(t, d.ID)
	if rec.Attestation == nil || rec.Attestation.Refusal != "" || rec.Attestation.Serial == "" || len(rec.Attestation.Images) != 2 {
		t.Errorf("device record attestation = %+v, want a success with serial and two images", rec.Attestation)
	}
	if rec.Floors["apps/dw100-app"] != 1 || rec.Floors["os/moat-os"] != 1 {
		t.Errorf("floors = %v, want raised to the attested security versions", rec.Floors)
	}
	certs, err := f.Admin.ListDeviceCertificates(ctx, f.Tenant, d.ID, client.ListOptions{})
	if err != nil || len(certs.Items) != 1 || certs.Items[0].Serial != rec.Attestation.Serial || len(certs.Items[0].Images) != 2 {
		t.Errorf("certificates = %+v, %v; want the one issued, with the attested images", certs.Items, err)
	}
}

// refusal attests and expects a 403 that says only "refused", the reason counted in
// moat_attestation_refusals_total, and, when the device signed the evidence (recorded), the
// reason on the device's record.
func (f *fleet) refusal(t *testing.T, name string, evidence []byte, d testenv.Device, reason string, recorded bool) {
	t.Helper()
	before := f.refusals(t, reason)
	_, err := f.Anon().Attest(context.Background(), evidence)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden || ce.Code != "attestation_refused" || ce.Detail != "refused" {
		t.Fatalf("%s: Attest = %v, want 403 attestation_refused saying only \"refused\"", name, err)
	}
	if after := f.refusals(t, reason); after != before+1 {
		t.Errorf("%s: moat_attestation_refusals_total{reason=%q} went from %v to %v, want one more", name, reason, before, after)
	}
	if !recorded {
		return
	}
	rec, err := f.Admin.GetDevice(context.Background(), f.Tenant, d.ID)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if rec.Attestation == nil || rec.Attestation.Refusal != reason {
		t.Errorf("%s: device record attestation = %+v, want refusal %q", name, rec.Attestation, reason)
	}
	evs, err := f.Admin.ListAuditEvents(context.Background(), f.Tenant, client.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs.Items {
		found = found || e.Action == "device.attestation_refused" && e.ObjectID == d.ID && strings.HasPrefix(e.Detail, reason+":")
	}
	if !found {
		t.Errorf("%s: no device.attestation_refused audit event with reason %s", name, reason)
	}
}

// refusals reads the server's refusal counter for reason.
func (f *fleet) refusals(t *testing.T, reason string) float64 {
	t.Helper()
	return f.metric(t, `moat_attestation_refusals_total{reason="`+reason+`"}`)
}

// metric reads one sample of the server's /metrics.
func (f *fleet) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := f.Server.HTTPClient(t).Get(f.Server.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	prefix := name + " "
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no metric %s", prefix)
	return 0
}

// TestAttest_Refusals attacks each rule of attestation: each case would get a certificate
// if its check were missing.
func TestAttest_Refusals(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	good := []attest.Measurement{f.os.Measurement(), f.app.Measurement()}

	t.Run("unknown device", func(t *testing.T) {
		k, err := identity.CreateFileKey(t.TempDir() + "/k")
		if err != nil {
			t.Fatal(err)
		}
		d := testenv.Device{Key: k, ID: string(k.ID())}
		f.refusal(t, "unregistered", f.Evidence(d, false, good...), d, "unknown_device", false)
	})
	t.Run("unclaimed", func(t *testing.T) {
		d := f.NewDevice(false, "")
		f.refusal(t, "unclaimed", f.Evidence(d, false, good...), d, "unclaimed", false)
	})
	t.Run("blocked", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		f.Update(d.ID, client.DeviceUpdate{Blocked: ptr(true)})
		f.refusal(t, "blocked", f.Evidence(d, false, good...), d, "blocked", true)
	})
	t.Run("bad signature", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		other := f.NewDevice(true, "DW100/Production")
		n, err := f.Anon().CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: d.ID})
		if err != nil {
			t.Fatal(err)
		}
		// Signed by another device's key while naming d: Sign refuses, so forge the envelope.
		ev, err := attest.Sign(other.Key, attest.Evidence{DeviceID: other.ID, Nonce: n.Nonce, Time: time.Now(), Measurements: good})
		if err != nil {
			t.Fatal(err)
		}
		forged := strings.ReplaceAll(string(ev), other.ID, d.ID)
		f.refusal(t, "another device's key", []byte(forged), d, "bad_signature", false)
	})
	t.Run("replayed nonce", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		ev := f.Evidence(d, false, good...)
		if _, err := f.Anon().Attest(ctx, ev); err != nil {
			t.Fatalf("first use: %v", err)
		}
		f.refusal(t, "replay", ev, d, "stale_or_replayed_nonce", true)
	})
	t.Run("nonce of another device", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		other := f.NewDevice(true, "DW100/Production")
		n, err := f.Anon().CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: other.ID})
		if err != nil {
			t.Fatal(err)
		}
		ev, err := attest.Sign(d.Key, attest.Evidence{DeviceID: d.ID, Nonce: n.Nonce, Time: time.Now(), Measurements: good})
		if err != nil {
			t.Fatal(err)
		}
		f.refusal(t, "nonce of another device", ev, d, "stale_or_replayed_nonce", true)
	})
	t.Run("expired nonce", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		ev := f.Evidence(d, false, good...)
		f.offset.Store(int64(3 * time.Minute))
		defer f.offset.Store(0)
		// The evidence time is within skew, the nonce is past its 2 minutes.
		f.refusal(t, "expired nonce", ev, d, "stale_or_replayed_nonce", true)
	})
	t.Run("tampered app", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		m := f.app.Measurement()
		m.SHA256 = strings.Repeat("ab", 32)
		f.refusal(t, "tampered", f.Evidence(d, false, f.os.Measurement(), m), d, "unknown_image", true)
	})
	t.Run("unsigned OS", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		m := f.os.Measurement()
		m.Path, m.Version = "os/moat-os/9.9.9", "9.9.9"
		f.refusal(t, "unsigned OS", f.Evidence(d, false, m, f.app.Measurement()), d, "unknown_image", true)
	})
	t.Run("no OS measured", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		f.refusal(t, "no OS", f.Evidence(d, false, f.app.Measurement()), d, "unknown_image", true)
	})
	t.Run("security version lie", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		m := f.app.Measurement()
		m.SecurityVersion = 7
		f.refusal(t, "security version lie", f.Evidence(d, false, f.os.Measurement(), m), d, "unknown_image", true)
	})
	t.Run("another product's app", func(t *testing.T) {
		if _, err := f.Admin.CreateProduct(ctx, f.Tenant, client.ProductCreate{Name: "WM200"}); err != nil {
			t.Fatal(err)
		}
		wm := f.PublishApp("wm200-app", "1.0.0", 1, "WM200")
		d := f.NewDevice(true, "DW100/Production")
		f.refusal(t, "wrong product", f.Evidence(d, false, f.os.Measurement(), wm.Measurement()), d, "unknown_image", true)
	})
	t.Run("below floor", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
		if _, err := f.Attest(d, f.os.Measurement(), v2.Measurement()); err != nil {
			t.Fatalf("attest v2: %v", err)
		}
		// Rolled back to 1.0.0 (still signed, security version 1): the floor is now 2.
		f.refusal(t, "rollback", f.Evidence(d, false, good...), d, "below_floor", true)
	})
	t.Run("development mode", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Development")
		f.refusal(t, "dev mode", f.Evidence(d, true, good...), d, "development_mode_not_allowed", true)
		// With the capability it passes, and a side-loaded app is allowed only then.
		f.Update(d.ID, client.DeviceUpdate{Development: ptr(true)})
		side := f.app.Measurement()
		side.Path, side.SHA256, side.Version = "apps/dw100-app/0.0.1-dev", strings.Repeat("cd", 32), "0.0.1-dev"
		if _, err := f.Anon().Attest(ctx, f.Evidence(d, true, f.os.Measurement(), side)); err != nil {
			t.Fatalf("development device with capability: %v", err)
		}
		// A production device running the same side-loaded app is refused.
		p := f.NewDevice(true, "DW100/Production")
		f.refusal(t, "side-loaded on production", f.Evidence(p, false, f.os.Measurement(), side), p, "unknown_image", true)
	})
	t.Run("revoked image", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		bad := f.PublishApp("dw100-app", "1.0.1", 1, "DW100")
		if _, err := f.Attest(d, f.os.Measurement(), bad.Measurement()); err != nil {
			t.Fatalf("attest before revocation: %v", err)
		}
		f.RevokeApp(bad.Path)
		f.refusal(t, "revoked", f.Evidence(d, false, f.os.Measurement(), bad.Measurement()), d, "revoked_image", true)
	})
}

func ptr[T any](v T) *T { return &v }

// TestAuthenticate_DeviceAPI attacks mutual TLS on the device API: no certificate, a
// certificate from a CA the platform never certified, a blocked device with a still-valid
// certificate, and an expired certificate are all refused.
func TestAuthenticate_DeviceAPI(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	unauth := func(name string, c *client.Client) {
		t.Helper()
		_, err := c.GetAssignment(ctx)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
			t.Errorf("%s: GetAssignment = %v, want 401", name, err)
		}
	}
	unauth("no certificate", f.Anon())
	unauth("self-made CA", f.DeviceClient(f.ForgedCertificate(d)))

	dc := f.DeviceClient(cert)
	if _, err := dc.GetAssignment(ctx); err != nil {
		t.Fatalf("valid certificate: %v", err)
	}
	f.Update(d.ID, client.DeviceUpdate{Blocked: ptr(true)})
	unauth("blocked device", f.DeviceClient(cert))
	f.Update(d.ID, client.DeviceUpdate{Blocked: ptr(false)})
	if _, err := f.DeviceClient(cert).GetAssignment(ctx); err != nil {
		t.Fatalf("unblocked: %v", err)
	}
	f.offset.Store(int64(-time.Hour))
	unauth("certificate not yet valid", f.DeviceClient(cert))
	f.offset.Store(int64(25 * time.Hour))
	defer f.offset.Store(0)
	unauth("expired certificate", f.DeviceClient(cert))
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestDeployments_Refuses: a deployment names a current app of the tenant, for the
// group's product (wrong software never reaches a group), and needs a Contributor.
func TestDeployments_Refuses(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	if _, err := f.Admin.CreateProduct(ctx, f.Tenant, client.ProductCreate{Name: "WM200"}); err != nil {
		t.Fatal(err)
	}
	wm := f.PublishApp("wm200-app", "1.0.0", 1, "WM200")
	g := f.group("Production")
	for name, target := range map[string]string{
		"another product's app": wm.Path,
		"unsigned":              "apps/dw100-app/9.9.9",
		"an OS image":           f.os.Path,
	} {
		_, err := f.Admin.CreateDeployment(ctx, f.Tenant, f.Product, g.ID, client.DeploymentCreate{Target: target})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest {
			t.Errorf("deploy %s: %v, want 400", name, err)
		}
	}
	f.RevokeApp(f.app.Path)
	if _, err := f.Admin.CreateDeployment(ctx, f.Tenant, f.Product, g.ID, client.DeploymentCreate{Target: f.app.Path}); err == nil {
		t.Error("deploying a revoked app succeeded")
	}
	ds, err := f.Admin.ListDeployments(ctx, f.Tenant, f.Product, g.ID, client.ListOptions{})
	if err != nil || len(ds.Items) != 1 {
		t.Errorf("deployments = %+v, %v; want only the first", ds.Items, err)
	}
	r, err := f.Admin.CreateMember(ctx, f.Tenant, client.MemberCreate{Name: "reader", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	_, err = f.Client(r.Secret).CreateDeployment(ctx, f.Tenant, f.Product, g.ID, client.DeploymentCreate{Target: v2.Path})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("a Reader deploys: %v, want 403", err)
	}
}

// TestAuthenticate_ClonedIdentityIsFlagged attacks ATTACKS row 1 with a software key: two
// devices hold one identity key and both attest. The second attestation supersedes the
// first certificate; the first device's new connections with it are refused, the conflict
// is counted and written to the tenant's audit log, and the latest certificate works.
// The device's own connections opened before it renewed keep working.
func TestAuthenticate_ClonedIdentityIsFlagged(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	first, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	original := f.DeviceClient(first)
	if _, err := original.GetAssignment(ctx); err != nil { // opens a kept-alive connection
		t.Fatal(err)
	}
	clone, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	f.offset.Store(int64(time.Minute))
	defer f.offset.Store(0)
	if _, err := original.GetAssignment(ctx); err != nil {
		t.Errorf("the connection opened before the renewal: %v, want still accepted", err)
	}
	before := f.metric(t, "moat_device_identity_conflicts_total")
	_, err = f.DeviceClient(first).GetAssignment(ctx)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Fatalf("superseded certificate on a new connection: %v, want 401", err)
	}
	if after := f.metric(t, "moat_device_identity_conflicts_total"); after != before+1 {
		t.Errorf("identity conflicts went from %v to %v, want one more", before, after)
	}
	if _, err := f.DeviceClient(clone).GetAssignment(ctx); err != nil {
		t.Errorf("latest certificate: %v", err)
	}
	evs, err := f.Admin.ListAuditEvents(ctx, f.Tenant, client.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs.Items {
		found = found || e.Action == "device.identity_conflict" && e.ObjectID == d.ID
	}
	if !found {
		t.Error("no device.identity_conflict event in the tenant's audit log")
	}
}

// TestAuthenticate_RefusedAttestationEndsTheCertificate: a device whose fresh attestation
// is refused (it now runs a revoked image) loses its still-valid certificate at once; a
// replay of old evidence, which anyone who captured it could send, does not.
func TestAuthenticate_RefusedAttestationEndsTheCertificate(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	ev := f.Evidence(d, false, f.os.Measurement(), f.app.Measurement())
	is, err := f.Anon().Attest(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := testenv.TLSCertificate(t, is.ChainPEM, d.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Anon().Attest(ctx, ev); err == nil {
		t.Fatal("replayed evidence accepted")
	}
	if _, err := f.DeviceClient(cert).GetAssignment(ctx); err != nil {
		t.Fatalf("after a replay of its evidence the device's certificate must still work: %v", err)
	}
	bad := f.PublishApp("dw100-app", "1.0.1", 1, "DW100")
	f.RevokeApp(bad.Path)
	if _, err := f.Attest(d, f.os.Measurement(), bad.Measurement()); err == nil {
		t.Fatal("attestation with a revoked app accepted")
	}
	_, err = f.DeviceClient(cert).GetAssignment(ctx)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Fatalf("certificate after a refused attestation: %v, want 401", err)
	}
}

// TestAttest_OutdatedDeviceGetsItsUpdate (ATTACKS row 4): a device refused because it runs
// an image below its floor gets no certificate, but a recovery grant that opens only the
// update routes, so it fetches its assignment and images; the grant does not open anything
// else (not even GET /device/me: issue 10, defect 8), ends with its hour, and stops working
// when the device is blocked.
func TestAttest_OutdatedDeviceGetsItsUpdate(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	f.deploy("Production", v2.Path)
	d := f.NewDevice(true, "DW100/Production")
	if _, err := f.Attest(d, f.os.Measurement(), v2.Measurement()); err != nil {
		t.Fatal(err)
	}
	// It boots the old app (security version 1, below its floor 2).
	_, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden || ce.Detail != "refused" || ce.Recovery == nil {
		t.Fatalf("attest below the floor: %v, want 403 refused with a recovery grant", err)
	}
	if !strings.HasPrefix(ce.Recovery.Token, "moat_rcv_") || time.Until(ce.Recovery.ExpiresAt) > time.Hour+time.Minute {
		t.Errorf("recovery grant %+v, want a moat_rcv_ token for at most an hour", ce.Recovery)
	}
	rc := f.Client(ce.Recovery.Token)
	raw, err := rc.GetAssignment(ctx)
	if err != nil {
		t.Fatalf("assignment with the recovery token: %v", err)
	}
	a, err := director.Verify(raw, f.directorKey(t), director.Expect{DeviceID: d.ID, TenantID: f.Tenant, Now: time.Now()})
	if err != nil || len(a.Images) != 2 || a.Images[1].Path != v2.Path {
		t.Fatalf("assignment = %+v, %v; want the OS and %s", a.Images, err, v2.Path)
	}
	var sink bytes.Buffer
	if _, err := rc.GetDeviceTarget(ctx, "apps/dw100-app/"+v2.SHA256+".2.0.0", &sink); err != nil || sink.Len() != int(v2.Length) {
		t.Fatalf("download with the recovery token: %v, %d bytes", err, sink.Len())
	}
	unauth := func(name string, err error) {
		t.Helper()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
			t.Errorf("%s: %v, want 401", name, err)
		}
	}
	_, err = rc.GetDeviceSelf(ctx)
	unauth("the device's own record (not an update route)", err)
	_, err = rc.GetDevelopmentCapability(ctx)
	unauth("a route that is not for updates", err)
	_, err = rc.ListDevices(ctx, f.Tenant, client.ListOptions{})
	unauth("the management API", err)
	forged := ce.Recovery.Token[:len(ce.Recovery.Token)-4] + "AAAA"
	_, err = f.Client(forged).GetAssignment(ctx)
	unauth("a tampered token", err)
	// Refusals for other reasons carry no grant.
	blocked := f.NewDevice(true, "DW100/Production")
	f.Update(blocked.ID, client.DeviceUpdate{Blocked: ptr(true)})
	if _, err := f.Attest(blocked, f.os.Measurement(), f.app.Measurement()); !errors.As(err, &ce) || ce.Recovery != nil {
		t.Errorf("blocked device: %v, want a refusal without recovery", err)
	}
	f.Update(d.ID, client.DeviceUpdate{Blocked: ptr(true)})
	_, err = rc.GetAssignment(ctx)
	unauth("the grant of a device blocked since", err)
	f.Update(d.ID, client.DeviceUpdate{Blocked: ptr(false)})
	f.offset.Store(int64(61 * time.Minute))
	defer f.offset.Store(0)
	_, err = rc.GetAssignment(ctx)
	unauth("an expired grant", err)
}

// TestDevelopmentCapability: only a device granted the capability gets it, bound to itself;
// another device cannot use it, and revoking the grant stops its issue.
func TestDevelopmentCapability(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Development")
	prod := f.NewDevice(true, "DW100/Production")
	certD, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	certP, err := f.Attest(prod, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	var ce *client.Error
	if _, err := f.DeviceClient(certD).GetDevelopmentCapability(ctx); !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Fatalf("capability before the grant: %v, want 404", err)
	}
	f.Update(d.ID, client.DeviceUpdate{Development: ptr(true)})
	raw, err := f.DeviceClient(certD).GetDevelopmentCapability(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := f.directorKey(t)
	if _, err := capability.Verify(raw, key, capability.Expect{DeviceID: d.ID, TenantID: f.Tenant, Now: time.Now()}); err != nil {
		t.Fatalf("the granted device's capability: %v", err)
	}
	// A production device presented with it refuses it: it names another device.
	if _, err := capability.Verify(raw, key, capability.Expect{DeviceID: prod.ID, TenantID: f.Tenant, Now: time.Now()}); !errors.Is(err, capability.ErrWrongDevice) {
		t.Errorf("another device accepts the capability: %v", err)
	}
	if _, err := f.DeviceClient(certP).GetDevelopmentCapability(ctx); !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Errorf("production device's capability: %v, want 404", err)
	}
	f.Update(d.ID, client.DeviceUpdate{Development: ptr(false)})
	if _, err := f.DeviceClient(certD).GetDevelopmentCapability(ctx); !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Errorf("capability after the grant was withdrawn: %v, want 404", err)
	}
}

// TestWaitForUpdates: a waiting device is answered as soon as a deployment changes what it
// should run, not at its next interval; without a change the wait ends with the same
// generation.
func TestWaitForUpdates(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	dc := f.DeviceClient(cert)
	first, err := dc.WaitForUpdates(ctx, client.UpdatesWait{})
	if err != nil || !first.Changed || first.Generation == "" {
		t.Fatalf("first wait = %+v, %v; want a generation at once", first, err)
	}
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	second, err := dc.WaitForUpdates(ctx, client.UpdatesWait{Since: first.Generation})
	if err != nil || !second.Changed {
		t.Fatalf("after a publication: %+v, %v; want changed", second, err)
	}
	type result struct {
		u   client.Updates
		err error
		at  time.Duration
	}
	got := make(chan result, 1)
	start := time.Now()
	go func() {
		u, err := dc.WaitForUpdates(ctx, client.UpdatesWait{Since: second.Generation})
		got <- result{u, err, time.Since(start)}
	}()
	time.Sleep(300 * time.Millisecond)
	f.deploy("Production", v2.Path)
	r := <-got
	if r.err != nil || !r.u.Changed || r.u.Generation == second.Generation {
		t.Fatalf("wait across a deployment = %+v, %v", r.u, r.err)
	}
	if r.at > 10*time.Second {
		t.Errorf("the deployment reached the waiting device after %s, want at once", r.at)
	}
}
