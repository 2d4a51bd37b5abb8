package mgmt_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/internal/tuf"
)

// TestAPI_ListsHoldOnlyTheCallersObjects is ATTACKS row 31 (list and search leakage): two
// tenants on one server each have a product, a published app, a deployment, an attested
// device with its certificate and error reports. Every list route of the route table,
// called by A's administrator with A's IDs in the path and walked page by page (limit 1),
// holds only A's objects: every item's tenant is A, A's own objects are there, and none
// of B's IDs, serials, paths or hashes appears anywhere in the answers; and the other way
// round. A filter naming B's product is answered as for a product that does not exist.
func TestAPI_ListsHoldOnlyTheCallersObjects(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var opts []testenv.ServerOption
			if name == "postgres" {
				opts = append(opts, testenv.WithDatabase(testenv.FreshPostgresDatabase(t)))
			}
			p := testenv.NewPlatform(t, opts...)
			osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail")
			a := newLeakTenant(t, p, osImg, "Northwind", "NW10", "nw10-app")
			b := newLeakTenant(t, p, osImg, "Tailspin", "TS20", "ts20-app")
			a.checkLists(t, p, b)
			b.checkLists(t, p, a)
		})
	}
}

// leakTenant is a tenant with one of everything a list can return, and what identifies it.
type leakTenant struct {
	id, product, group, device string
	issue                      string
	productName                string
	admin                      *api
	// own are IDs each list must show (by list operation); ids is every identifier of the
	// tenant's objects, none of which may appear in another tenant's lists.
	own map[string][]string
	ids []string
}

func newLeakTenant(t *testing.T, p *testenv.Platform, osImg testenv.Image, name, product, app string) *leakTenant {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ten, err := p.Op.CreateTenant(ctx, client.TenantCreate{Name: name})
	must(err)
	m, err := p.Op.CreateMember(ctx, ten.ID, client.MemberCreate{Name: name + "-admin", Role: client.RoleAdministrator})
	must(err)
	admin := p.Client(m.Secret)
	p.SignPendingCAs()
	appKey, err := keys.Generate()
	must(err)
	pub, err := keys.EncodePublicPEM(&appKey.PublicKey)
	must(err)
	key, err := admin.CreateSigningKey(ctx, ten.ID, client.SigningKeyCreate{Name: "release", PublicKeyPEM: string(pub)})
	must(err)
	prod, err := admin.CreateProduct(ctx, ten.ID, client.ProductCreate{Name: product})
	must(err)

	// The platform OS key signs the tenant's targets.json (the shared OS image), the
	// tenant's key its apps.json (its own app).
	osSigner, err := keys.Signer(p.OSKey)
	must(err)
	targets, err := tuf.SignTargets(osSigner, 1, p.Expires, map[string]tuf.TargetFile{osImg.Path: {Length: osImg.Length, SHA256: osImg.SHA256,
		Custom: target.Custom{Kind: target.KindOS, Version: osImg.Version, SecurityVersion: osImg.SecurityVersion, Feeds: []string{"Retail"},
			ComponentID: "0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f"}}}, []*ecdsa.PublicKey{&appKey.PublicKey})
	must(err)
	_, err = p.Op.PutTenantTargets(ctx, ten.ID, targets)
	must(err)
	pkg := p.Pack("app", app, "1.0.0", 1, product)
	bi, err := admin.UploadBlob(ctx, ten.ID, bytes.NewReader(pkg))
	must(err)
	appImg := testenv.Image{Kind: "app", Path: "apps/" + app + "/1.0.0", SHA256: strings.TrimPrefix(bi.Digest, "sha256:"), Length: bi.Size, Version: "1.0.0", SecurityVersion: 1}
	appSigner, err := keys.Signer(appKey)
	must(err)
	apps, err := tuf.SignApps(appSigner, 1, p.Expires, map[string]tuf.TargetFile{appImg.Path: {Length: appImg.Length, SHA256: appImg.SHA256,
		Custom: target.Custom{Kind: target.KindApp, Version: "1.0.0", SecurityVersion: 1, Product: product, ComponentID: "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10"}}})
	must(err)
	_, err = admin.PutTenantApps(ctx, ten.ID, apps)
	must(err)
	gs, err := admin.ListDeviceGroups(ctx, ten.ID, prod.ID, client.ListOptions{Name: "Production"})
	must(err)
	if len(gs.Items) != 1 {
		t.Fatalf("product %s has %d groups named Production", product, len(gs.Items))
	}
	dep, err := admin.CreateDeployment(ctx, ten.ID, prod.ID, gs.Items[0].ID, client.DeploymentCreate{Target: appImg.Path})
	must(err)

	// A device, claimed, in the group, attested: it holds a certificate and sends reports.
	k, err := identity.CreateFileKey(filepath.Join(t.TempDir(), "identity.key"))
	must(err)
	dpub, err := keys.EncodePublicPEM(k.Public())
	must(err)
	dev, err := p.Op.RegisterDevice(ctx, client.DeviceRegister{PublicKeyPEM: string(dpub)})
	must(err)
	_, err = admin.ClaimDevices(ctx, ten.ID, client.DeviceClaim{DeviceIDs: []string{dev.ID}})
	must(err)
	d, err := admin.GetDevice(ctx, ten.ID, dev.ID)
	must(err)
	group := product + "/Production"
	_, err = admin.UpdateDevice(ctx, ten.ID, dev.ID, d.Version, client.DeviceUpdate{DeviceGroup: &group})
	must(err)
	n, err := p.Anon().CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: dev.ID})
	must(err)
	ev, err := attest.Sign(k, attest.Evidence{DeviceID: dev.ID, Nonce: n.Nonce, Time: time.Now(), Measurements: []attest.Measurement{osImg.Measurement(), appImg.Measurement()}})
	must(err)
	is, err := p.Anon().Attest(ctx, ev)
	must(err)
	cert, err := testenv.TLSCertificate(t, is.ChainPEM, k)
	must(err)
	device := &api{t: t, srv: p.Server, http: p.DeviceHTTPClient(cert)}
	now := time.Now().UTC().Truncate(time.Second)
	reports := []errreport.Report{
		{ID: errreport.NewID(now), Kind: errreport.AttestationRefused, At: now, Code: "refused"},
		{ID: errreport.NewID(now), Kind: errreport.CapabilityDenied, At: now, ImagePath: appImg.Path, Capability: "gpio:5"},
	}
	accepted := upload(t, device, reports)
	// The capability denial names this tenant's app, so its issue is this tenant's alone
	// (the refusal's signature, and so its issue ID, is the same in every tenant).
	issue := errreport.IssueID(errreport.Signature(reports[1]))

	cas, err := admin.ListDeviceCAs(ctx, ten.ID, client.ListOptions{})
	must(err)
	lt := &leakTenant{id: ten.ID, product: prod.ID, productName: product, group: gs.Items[0].ID, device: dev.ID, issue: issue, admin: newAPI(t, p.Server, m.Secret),
		own: map[string][]string{
			"listDevices":            {dev.ID},
			"listDeviceStatuses":     {dev.ID},
			"listDeviceCertificates": {is.Serial},
			"listErrorReports":       accepted,
			"listErrorIssues":        {issue, errreport.IssueID(errreport.Signature(reports[0]))},
			"listErrorIssueReports":  {reports[1].ID},
			"listDeployments":        {dep.ID},
			"listProducts":           {prod.ID},
			"listDeviceGroups":       {gs.Items[0].ID},
			"listSigningKeys":        {key.ID},
			"listMembers":            {m.Member.User.ID},
		}}
	lt.ids = append(lt.ids, ten.ID, prod.ID, gs.Items[0].ID, dev.ID, is.Serial, dep.ID, key.ID, m.Member.User.ID, appImg.Path, appImg.SHA256, product)
	lt.ids = append(lt.ids, accepted...)
	lt.ids = append(lt.ids, issue)
	for _, ca := range cas.Items {
		lt.ids = append(lt.ids, ca.ID)
	}
	if len(accepted) != len(reports) || is.Serial == "" || len(cas.Items) == 0 {
		t.Fatalf("tenant %s: %d reports accepted, serial %q, %d CAs; want all set", name, len(accepted), is.Serial, len(cas.Items))
	}
	return lt
}

// checkLists walks every list route as lt's administrator and checks that it holds lt's
// objects and nothing of other's.
func (lt *leakTenant) checkLists(t *testing.T, p *testenv.Platform, other *leakTenant) {
	t.Helper()
	param := regexp.MustCompile(`\{([a-z_]+)\}`)
	vals := map[string]string{"tenant": lt.id, "product": lt.product, "group": lt.group, "device": lt.device, "issue": lt.issue}
	seen := map[string]bool{}
	for _, rt := range mgmt.Routes() {
		if !rt.List || rt.Method != "GET" || (rt.Auth != mgmt.AuthTenant && rt.Auth != mgmt.AuthAny) {
			continue
		}
		path := param.ReplaceAllStringFunc(rt.Pattern, func(m string) string {
			v, ok := vals[m[1:len(m)-1]]
			if !ok {
				t.Fatalf("list route %s: no value for %s; add one to this test", rt.Pattern, m)
			}
			return v
		})
		if rt.OperationID == "listDeviceStatuses" { // the fleet status is per product
			path += "?product=" + url.QueryEscape(lt.productName)
		}
		items := lt.walk(t, path)
		seen[rt.OperationID] = true
		for _, it := range items {
			if tid, ok := it["tenant_id"].(string); ok && tid != lt.id && rt.OperationID != "listTenants" {
				t.Errorf("%s as %s: item of tenant %s: %v", rt.OperationID, lt.id, tid, it)
			}
			if rt.OperationID == "listTenants" && it["id"] != lt.id {
				t.Errorf("listTenants as %s's administrator: %v", lt.id, it["id"])
			}
		}
		raw, _ := json.Marshal(items)
		for _, id := range other.ids {
			if bytes.Contains(raw, []byte(id)) {
				t.Errorf("%s (%s) as tenant %s shows %q, an identifier of tenant %s", rt.OperationID, path, lt.id, id, other.id)
			}
		}
		for _, id := range lt.own[rt.OperationID] {
			if !bytes.Contains(raw, []byte(id)) {
				t.Errorf("%s (%s) as tenant %s lacks its own %q", rt.OperationID, path, lt.id, id)
			}
		}
	}
	for op := range lt.own {
		if !seen[op] {
			t.Errorf("no list route %s in the route table", op)
		}
	}
	// A filter naming the other tenant's product finds nothing: that product does not
	// exist for this tenant.
	for _, list := range []string{"devices", "error-issues"} {
		if r := lt.admin.do("GET", "/api/v1/tenants/"+lt.id+"/"+list+"?product="+url.QueryEscape(other.productName), nil); r.Status != 404 || r.problem(t).Code != "product_not_found" {
			t.Errorf("%s of %s filtered by %s's product = %d %s, want 404 product_not_found", list, lt.id, other.id, r.Status, r.Body)
		}
	}
	// So does the fleet status, and the tenant's own fleet status shows nothing of other's.
	for _, route := range []string{"/fleet-status", "/device-statuses", "/devices"} {
		for _, q := range []string{"?product=", "?group=Production&product=", "?state=current&product="} {
			r := lt.admin.do("GET", "/api/v1/tenants/"+lt.id+route+q+url.QueryEscape(other.productName), nil)
			if r.Status != 404 || r.problem(t).Code != "product_not_found" {
				t.Errorf("%s%s of %s filtered by %s's product = %d %s, want 404 product_not_found", route, q, lt.id, other.id, r.Status, r.Body)
			}
		}
	}
	status := lt.admin.must(200, "GET", "/api/v1/tenants/"+lt.id+"/fleet-status?product="+url.QueryEscape(lt.productName), nil)
	for _, id := range other.ids {
		if bytes.Contains(status.Body, []byte(id)) {
			t.Errorf("tenant %s's fleet status names %q of tenant %s", lt.id, id, other.id)
		}
	}
	if !bytes.Contains(status.Body, []byte(`"current":1`)) {
		t.Errorf("tenant %s's fleet status does not count its own current device: %s", lt.id, status.Body)
	}
	// The tenant's view of the image repository names only its own app.
	apps := lt.admin.must(200, "GET", "/api/v1/tenants/"+lt.id+"/tuf/metadata/1.apps.json", nil)
	for _, id := range other.ids {
		if bytes.Contains(apps.Body, []byte(id)) {
			t.Errorf("tenant %s's apps.json names %q of tenant %s", lt.id, id, other.id)
		}
	}
}

// walk reads every page of a list, one item a page.
func (lt *leakTenant) walk(t *testing.T, path string) []map[string]any {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	var all []map[string]any
	token := ""
	for range 100 {
		var page struct {
			Items         []map[string]any `json:"items"`
			NextPageToken string           `json:"next_page_token"`
		}
		lt.admin.must(200, "GET", path+sep+"limit=1&page_token="+url.QueryEscape(token), nil).decode(t, &page)
		all = append(all, page.Items...)
		if token = page.NextPageToken; token == "" {
			return all
		}
	}
	t.Fatalf("%s: pagination does not end", path)
	return nil
}
