package update_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/testenv"
)

// device is a real device against a real server: attested, with its certificate, using
// only the device API (mutual TLS) and the pinned platform root.
type device struct {
	p   *testenv.Platform
	d   testenv.Device
	api *client.Client
	upd *update.Client
	dir string
}

func newDevice(t *testing.T, p *testenv.Platform, group string, booted ...testenv.Image) *device {
	t.Helper()
	d := p.NewDevice(true, group)
	var ms []attest.Measurement
	for _, im := range booted {
		ms = append(ms, im.Measurement())
	}
	cert, err := p.Attest(d, ms...)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	dirKey, err := update.DirectorKeyFromRoot(p.Root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base := p.Server.DeviceURL + "/api/v1/device/tuf/"
	upd, err := update.New(update.Config{
		MetadataURL: base + "metadata/", TargetsURL: base + "targets/", Root: p.Root, DirectorKey: dirKey,
		DeviceID: d.ID, TenantID: p.Tenant, StateDir: filepath.Join(dir, "state"), HTTPClient: p.DeviceHTTPClient(cert),
		Now: time.Now, FetchOptions: blob.FetchOptions{StallTimeout: 10 * time.Second, Timeout: time.Minute}, MaxMetadataBytes: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &device{p: p, d: d, api: p.DeviceClient(cert), upd: upd, dir: dir}
}

// install fetches the assignment, checks it against TUF, downloads every planned image and
// commits the floors; it returns the installed paths.
func (dv *device) install(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	raw, err := dv.api.GetAssignment(ctx)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := dv.upd.Check(ctx, raw)
	if err != nil {
		t.Fatalf("Check of the server's assignment: %v", err)
	}
	var paths []string
	for _, im := range plan.Images {
		dst := filepath.Join(dv.dir, filepath.Base(im.Path)+"."+im.Kind)
		if err := dv.upd.Download(ctx, im, dst); err != nil {
			t.Fatalf("Download %s: %v", im.Path, err)
		}
		if fi, err := os.Stat(dst); err != nil || fi.Size() != im.Length {
			t.Fatalf("downloaded %s: %v, want %d bytes", im.Path, err, im.Length)
		}
		if err := dv.upd.Commit(im.Kind, im.SecurityVersion); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, im.Path)
	}
	return paths
}

// TestDevice_InstallsAssignedImagesFromServer is the client harness of the update path: a
// device, over mutual TLS and with only its pinned root, installs exactly what the server's
// director assigns to its group and the offline keys signed.
func TestDevice_InstallsAssignedImagesFromServer(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	ctx := t.Context()
	os1 := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	os2eval := p.PublishOS("moat-os", "1.1.0", 1, "RetailEval")
	app1 := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	app2 := p.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	group := func(name string) client.DeviceGroup {
		gs, err := p.Admin.ListDeviceGroups(ctx, p.Tenant, p.Product, client.ListOptions{Name: name})
		if err != nil || len(gs.Items) != 1 {
			t.Fatalf("group %s: %v", name, err)
		}
		return gs.Items[0]
	}
	deploy := func(g, target string) {
		if _, err := p.Admin.CreateDeployment(ctx, p.Tenant, p.Product, group(g).ID, client.DeploymentCreate{Target: target}); err != nil {
			t.Fatal(err)
		}
	}
	deploy("Production", app1.Path)
	deploy("Field Test OS Evaluation", app2.Path)

	prod := newDevice(t, p, "DW100/Production", os1, app1)
	if got := prod.install(t); !equal(got, os1.Path, app1.Path) {
		t.Errorf("Production device installed %v, want %s (Retail) and %s", got, os1.Path, app1.Path)
	}
	field := newDevice(t, p, "DW100/Field Test OS Evaluation", os1, app1)
	if got := field.install(t); !equal(got, os2eval.Path, app2.Path) {
		t.Errorf("Field Test device (RetailEval) installed %v, want %s and %s", got, os2eval.Path, app2.Path)
	}
	// A new deployment reaches the group at the next check.
	deploy("Production", app2.Path)
	if got := prod.install(t); !equal(got, os1.Path, app2.Path) {
		t.Errorf("after deploying 2.0.0: installed %v, want %s and %s", got, os1.Path, app2.Path)
	}
	// A revoked app is never assigned, even though its group's deployment names it.
	p.RevokeApp(app2.Path)
	if got := prod.install(t); !equal(got, os1.Path) {
		t.Errorf("after revoking 2.0.0: assigned %v, want only the OS", got)
	}
	// A group that takes OS updates only gets no app.
	osOnly := newDevice(t, p, "DW100/Production", os1, app1)
	g := group("Production")
	if _, err := p.Admin.UpdateDeviceGroup(ctx, p.Tenant, p.Product, g.ID, g.Version, client.DeviceGroupUpdate{UpdatePolicy: ptrPolicy(client.UpdateOSOnly)}); err != nil {
		t.Fatal(err)
	}
	if got := osOnly.install(t); !equal(got, os1.Path) {
		t.Errorf("UpdateOSOnly group: installed %v, want only the OS", got)
	}
}

func equal(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func ptrPolicy(p client.UpdatePolicy) *client.UpdatePolicy { return &p }
