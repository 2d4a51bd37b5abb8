package console_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// Payloads a device or a careless colleague could write, which the console must show as
// text: each sets window.__xss if it ever runs.
const (
	scriptPayload = `<script>window.__xss=1</script>`
	imgPayload    = `"><img src=x onerror=window.__xss=2>`
)

// world is tenant A (the platform's Contoso) with a fleet whose texts hold the payloads,
// and tenant B with a user who has no role in A.
type world struct {
	p        *testenv.Platform
	adminTok string
	// A's objects.
	device  string // in DW100/Production, with error reports
	evil    string // in the group whose name is a payload
	group   client.DeviceGroup
	evilGrp client.DeviceGroup
	app     testenv.Image
	// B: its tenant and a user of it.
	tenantB string
	tokB    string
}

func newWorld(t *testing.T, p *testenv.Platform) *world {
	t.Helper()
	ctx := t.Context()
	w := &world{p: p, adminTok: adminToken(t, p)}
	gs, err := p.Admin.ListDeviceGroups(ctx, p.Tenant, p.Product, client.ListOptions{Name: "Production"})
	if err != nil || len(gs.Items) != 1 {
		t.Fatalf("Production group: %v %v", gs, err)
	}
	w.group = gs.Items[0]
	if w.evilGrp, err = p.Admin.CreateDeviceGroup(ctx, p.Tenant, p.Product, client.DeviceGroupCreate{Name: imgPayload, OSFeed: client.OSFeedRetail, UpdatePolicy: client.UpdateAll}); err != nil {
		t.Fatal(err)
	}
	w.device = p.NewDevice(true, "DW100/Production").ID
	w.evil = p.NewDevice(true, "DW100/"+imgPayload).ID
	w.app = p.PublishApp("dw100-app", "1.0.0", 1, "DW100")

	// Reports as the device API would store them (the store's own path, so no attestation
	// is needed to set the scene).
	now := time.Now()
	err = p.Server.Store().InTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(p.Tenant))
		if err != nil {
			return err
		}
		for i := range 5 {
			code := 1
			r := errreport.Report{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Kind: errreport.AppCrash, At: now,
				ImagePath: "apps/dw100-app/1.0.0", ImageVersion: "1.0.0", Message: scriptPayload, ExitCode: &code,
				StderrTail: "panic: " + imgPayload + "\n" + scriptPayload}
			if err := tt.ErrorReports().Add(ctx, device.ID(w.device), r, now.Add(-time.Duration(i)*24*time.Hour)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	tb, err := p.Op.CreateTenant(ctx, client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	w.tenantB = tb.ID
	m, err := p.Op.CreateMember(ctx, tb.ID, client.MemberCreate{Name: "fabrikam-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	w.tokB = m.Secret
	return w
}

// aPaths are every console page of tenant A's objects, and the same objects under B's
// tenant path.
func (w *world) aPaths() []string {
	a, b := "/ui/t/"+w.p.Tenant, "/ui/t/"+w.tenantB
	grp := "/products/" + w.p.Product + "/groups/" + w.group.ID
	var out []string
	for _, t := range []string{a, b} {
		out = append(out, t+"/devices/"+w.device, t+"/devices/"+w.device+"/error-reports", t+grp)
	}
	return append(out, a+"/", a+"/devices", a+"/devices?product=DW100", a+"/deployments", a+"/error-reports", a+"/audit")
}

// aPosts are every console form of A's objects, under A's and B's tenant paths.
func (w *world) aPosts() []string {
	a, b := "/ui/t/"+w.p.Tenant, "/ui/t/"+w.tenantB
	grp := "/products/" + w.p.Product + "/groups/" + w.group.ID
	var out []string
	for _, t := range []string{a, b} {
		out = append(out, t+"/devices/"+w.device+"/blocked", t+"/devices/"+w.device+"/group", t+grp+"/deploy", t+grp+"/deployments")
	}
	return out
}
