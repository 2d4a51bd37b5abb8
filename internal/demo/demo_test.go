package demo_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/agent/sandbox"
	"github.com/moat-iot/moat/internal/demo"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestMain lets this test binary be the demo's DW100 app too: the demo's app images run
// the binary that runs the demo.
func TestMain(m *testing.M) {
	sandbox.MaybeInit()
	demo.MaybeRunApp()
	maybeRunGateApp()
	os.Exit(m.Run())
}

func TestDemo_SeedScenario(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out bytes.Buffer
	logs := &testenv.SyncBuffer{}
	// The management address is taken, as 8443 is on many machines (defect 1): the demo
	// plays its whole scenario on a free port instead.
	busy := occupy(t)
	d, err := demo.Start(ctx, demo.Config{Addr: busy, DeviceAddr: "127.0.0.1:0", DataDir: t.TempDir(), TripSoak: 90 * time.Second}, slog.New(slog.NewTextHandler(logs, nil)), &out)
	if err != nil {
		t.Fatalf("demo.Start on busy %s: %v", busy, err)
	}
	if d.Result.URL == "https://"+busy || !strings.Contains(out.String(), busy+" is in use") {
		t.Errorf("demo on busy %s: URL %s, output %q; want another port and a note", busy, d.Result.URL, out.String())
	}
	outc := &testenv.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, outc) }()

	select {
	case <-d.Played():
	case err := <-done:
		t.Fatalf("demo stopped before playing the scenario: %v\n%s", err, outc.String())
	}
	// Four agents started apps several times: one warning that apps run without the
	// sandbox, and no line names a device twice (issue 10, defect 12).
	if n := strings.Count(logs.String(), agent.NoSandboxWarning); n != 1 {
		t.Errorf("the demo's log warns %d times that apps run without the sandbox, want once", n)
	}
	for l := range strings.Lines(logs.String()) {
		if strings.Count(l, " device_id=")+strings.Count(l, " device=") > 1 {
			t.Errorf("log line names its device more than once: %s", l)
		}
	}
	r := d.Result
	if r.Tenant.Name != "Contoso" || r.Product.Name != "DW100" || len(r.Groups) != 5 {
		t.Fatalf("demo result = tenant %q product %q %d groups, want Contoso, DW100, 5", r.Tenant.Name, r.Product.Name, len(r.Groups))
	}
	caPEM := mustRead(t, r.CAFile)
	contoso, err := client.New(r.URL, client.WithToken(r.AdminToken), client.WithCACertPEM(caPEM))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := contoso.ListProducts(ctx, r.Tenant.ID, client.ListOptions{})
	if err != nil || len(ps.Items) != 1 || ps.Items[0].ID != r.Product.ID {
		t.Errorf("Contoso lists products %+v, %v; want DW100", ps.Items, err)
	}
	// The platform operator left Contoso: it sees none of its data.
	op, _ := client.New(r.URL, client.WithToken(r.OperatorToken), client.WithCACertPEM(caPEM))
	if _, err := op.ListProducts(ctx, r.Tenant.ID, client.ListOptions{}); err == nil {
		t.Error("the platform operator reads Contoso's products after leaving the tenant")
	}
	// Contoso's offline side: the key is registered by its public half only, the private
	// half stays in a 0600 file, and the app image is a valid package for DW100.
	keysList, err := contoso.ListSigningKeys(ctx, r.Tenant.ID, client.ListOptions{})
	if err != nil || len(keysList.Items) != 1 || keysList.Items[0].TUFKeyID != r.SigningKey.TUFKeyID {
		t.Errorf("Contoso's signing keys = %+v, %v; want the demo's key", keysList.Items, err)
	}
	if st, err := os.Stat(r.KeyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("private key file %s: %v, %v; want mode 0600", r.KeyFile, st, err)
	}
	f, err := os.Open(r.AppImage)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pkg, err := image.Open(f)
	if err != nil {
		t.Fatalf("image.Open(demo app) = %v", err)
	}
	if _, err := io.Copy(io.Discard, pkg.Payload()); err != nil {
		t.Errorf("demo app payload does not verify: %v", err)
	}
	if m := pkg.Manifest(); m.Product != "DW100" || m.Kind != "app" {
		t.Errorf("demo app manifest = %+v, want an app for DW100", m)
	}
	// Anyone with a Contoso token and the pinned root verifies and downloads the app with an
	// unmodified go-tuf client: the whole offline/online split works end to end.
	if r.AppsVersion != 3 {
		t.Errorf("apps.json version = %d, want 3 (1.0.0, 1.1.0, 2.0.0)", r.AppsVersion)
	}
	// The fleet of real agents: every device but the tampered one attested running the OS
	// and app 1.1.0 (the field-test device after rolling back 2.0.0); the tampered one was
	// refused with its reason on record.
	if len(r.Devices) != 5 || len(r.RolloutFleet) != 16 {
		t.Fatalf("demo fleet = %d devices and %d in the rollout fleet, want 5 (4 running, 1 tampered) and 16", len(r.Devices), len(r.RolloutFleet))
	}
	for i, dev := range r.Devices {
		if i == len(r.Devices)-1 {
			if dev.Refusal != "unknown_image" || dev.Serial != "" || len(dev.Installed) != 0 {
				t.Errorf("tampered device = %+v, want refused unknown_image, no certificate, nothing installed", dev)
			}
			continue
		}
		if dev.Serial == "" || dev.Refusal != "" || strings.Join(dev.Installed, " ") != r.OSPath+" apps/dw100-app/1.1.0" {
			t.Errorf("device %d = %+v, want a certificate and %s + apps/dw100-app/1.1.0 installed", i, dev, r.OSPath)
		}
	}
	reports, err := contoso.ListErrorReports(ctx, r.Tenant.ID, r.FieldDevice, client.ListOptions{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var crash bool
	for _, rep := range reports.Items {
		crash = crash || rep.Report.Kind == "app_crash" && rep.Report.ImagePath == "apps/dw100-app/2.0.0" && strings.Contains(rep.Report.StderrTail, "calibration")
	}
	if !crash {
		t.Errorf("the field-test device's error reports lack the crash of 2.0.0: %+v", reports.Items)
	}
	// What the console shows: the crash as an error issue, and devices per version.
	issues, err := contoso.ListErrorIssues(ctx, r.Tenant.ID, client.ErrorIssueOptions{Kind: "app_crash"})
	if err != nil || len(issues.Items) == 0 || issues.Items[0].ImageName != "apps/dw100-app" || issues.Items[0].Devices != 1 {
		t.Errorf("Contoso's app-crash issues = %+v, %v; want the crash of dw100-app on one device", issues.Items, err)
	} else if is, err := contoso.GetErrorIssue(ctx, r.Tenant.ID, issues.Items[0].ID); err != nil || len(is.Versions) != 1 || is.Versions[0].Version != "2.0.0" {
		t.Errorf("issue %s = %+v, %v; want its reports on version 2.0.0", issues.Items[0].ID, is, err)
	}
	health, err := contoso.GetImageHealth(ctx, r.Tenant.ID, "", 0)
	devicesOn, crashes := map[string]int{}, map[string]int{}
	for _, v := range health.Versions {
		devicesOn[v.Target], crashes[v.Target] = v.Devices, v.Crashes
	}
	if err != nil || devicesOn["apps/dw100-app/1.1.0"] < 4 || devicesOn[r.OSPath] < 4 || devicesOn["apps/dw100-app/2.0.0"] != 0 || crashes["apps/dw100-app/2.0.0"] == 0 {
		t.Errorf("devices per version = %v, crashes %v, %v; want the 4 story devices (and the rollout fleet as it joins) on %s and on app 1.1.0, none on 2.0.0 and its crashes", devicesOn, crashes, err, r.OSPath)
	}
	fleet, err := contoso.GetFleetStatus(ctx, r.Tenant.ID, "DW100", "")
	if err != nil || fleet.Totals.Devices != len(r.Devices)+len(r.RolloutFleet) || fleet.Totals.Refused != 1 {
		t.Errorf("DW100's fleet status totals = %+v, %v; want %d devices, 1 refused", fleet.Totals, err, len(r.Devices)+len(r.RolloutFleet))
	}
	chain := mustRead(t, r.CAChain)
	if strings.Count(string(chain), "BEGIN CERTIFICATE") != 2 {
		t.Errorf("CA chain %s holds %d certificates, want Contoso's CA and the platform root", r.CAChain, strings.Count(string(chain), "BEGIN CERTIFICATE"))
	}
	// Contoso's cloud: every running device streamed its readings over its attested MQTT
	// session, and the cloud serves them to Contoso's staff with their moat token.
	cc, err := client.New(r.CloudURL, client.WithToken(r.AdminToken), client.WithCACertPEM(mustRead(t, r.CloudCAFile)))
	if err != nil {
		t.Fatal(err)
	}
	cds, err := cc.ListCloudDevices(ctx, client.ListOptions{})
	if err != nil || len(cds.Items) != 4 || len(r.CloudDevices) != 4 {
		t.Errorf("cloud devices = %+v, %v; want the 4 story devices %v", cds.Items, err, r.CloudDevices)
	}
	for _, id := range r.CloudDevices {
		page, err := cc.ListTelemetry(ctx, id, client.TelemetryQuery{Metric: "drying_temp"})
		if err != nil || len(page.Items) == 0 || page.Items[0].Unit != "Cel" {
			t.Errorf("cloud telemetry of %s = %+v, %v; want its drying temperatures", id, page.Items, err)
		}
	}
	var story demo.StoryResult
	select {
	case story = <-d.StoryDone():
		if story.Err != nil {
			t.Fatalf("the owners' story: %v\n%s", story.Err, outc.String())
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("the owners' story did not end\n%s", outc.String())
	}
	// The owners' side of the seed story: the failing heater was spotted against the fleet,
	// the self-test run remotely confirmed it, its owner was mailed, and the part reserved at
	// her repair shop because the machine is under warranty; the other owner was prompted to
	// buy rinse agent. Every mail went over TLS to the demo's mail server.
	if dg := story.HeaterDiagnostic; dg.Command != "heater-self-test" || dg.State != "succeeded" || !strings.Contains(string(dg.Result), "heater_failing") {
		t.Errorf("heater diagnostic = %+v, want a succeeded self-test with verdict heater_failing", dg)
	}
	if len(r.Owners) != 2 || story.HeaterAlert == "" || story.RinseAlert == "" || story.Reservation == "" {
		t.Errorf("demo story = owners %+v, heater alert %q, rinse alert %q, reservation %q", r.Owners, story.HeaterAlert, story.RinseAlert, story.Reservation)
	}
	if res, _ := cc.ListReservations(ctx, client.ReservationQuery{}); len(res.Items) != 1 || res.Items[0].Device != r.Owners[0].Device || res.Items[0].State != "reserved" {
		t.Errorf("reservations = %+v, want one, for the heater of the appliance under warranty", res.Items)
	}
	if a, err := cc.GetAlert(ctx, story.HeaterAlert); err != nil || a.Device != r.Owners[0].Device || a.Rule != "heater-drying-anomaly" {
		t.Errorf("heater alert = %+v, %v", a, err)
	}
	mails := map[string]int{}
	for _, m := range d.Mail() {
		if !m.TLS {
			t.Errorf("mail %q to %v came without TLS", m.Subject, m.To)
		}
		mails[strings.Join(m.To, ",")+": "+m.Subject]++
	}
	for _, want := range []string{r.Owners[0].Email + ": Verify your email address", r.Owners[1].Email + ": Verify your email address"} {
		if mails[want] != 1 {
			t.Errorf("mails = %v, want one %q", mails, want)
		}
	}
	var notified, prompted bool
	for k, n := range mails {
		notified = notified || strings.HasPrefix(k, r.Owners[0].Email+": ") && strings.Contains(k, "needs attention") && n == 1
		prompted = prompted || strings.HasPrefix(k, r.Owners[1].Email+": ") && strings.Contains(k, "rinse agent") && n == 1
	}
	if !notified || !prompted {
		t.Errorf("mails = %v; want one heater notice to %s and one rinse-agent prompt to %s", mails, r.Owners[0].Email, r.Owners[1].Email)
	}
	checkRolloutStory(ctx, t, d, contoso, outc)
	root1 := mustRead(t, r.TrustAnchor)
	base := r.URL + "/api/v1/tenants/" + r.Tenant.ID + "/tuf/"
	cfg, err := config.New(base+"metadata/", root1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.LocalMetadataDir, cfg.LocalTargetsDir, cfg.RemoteTargetsURL = filepath.Join(dir, "m"), filepath.Join(dir, "t"), base+"targets/"
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: bearer{token: r.AdminToken, base: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
	if err := cfg.SetDefaultFetcherHTTPClient(hc); err != nil {
		t.Fatal(err)
	}
	up, err := updater.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Refresh(); err != nil {
		t.Fatalf("go-tuf Refresh against the demo = %v", err)
	}
	ti, err := up.GetTargetInfo("apps/dw100-app/1.0.0")
	if err != nil {
		t.Fatalf("GetTargetInfo = %v", err)
	}
	if _, data, err := up.DownloadTarget(ti, "", ""); err != nil || !bytes.Equal(data, mustRead(t, r.AppImage)) {
		t.Errorf("DownloadTarget = %d bytes, %v; want the packed app", len(data), err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("demo Serve after cancel = %v, want nil", err)
	}
	for _, want := range []string{"tenant Contoso", "product DW100", "Field Test OS Evaluation", "moat login --server " + r.URL, "support staff see unknown_image", "rolled back to apps/dw100-app/1.1.0", "Web console:         " + r.URL + "/ui/", "Console sign-in:     " + r.URL + "/ui/sign-in/link?code=", "Contoso's cloud:     " + r.CloudURL, "streams its DW100's readings to Contoso's cloud",
		"Owners' portal:      " + r.CloudURL + "/portal/", "Support view:        " + r.CloudURL + "/support/", "reserved a DW100-HTR-2 at her repair shop", "Subject: Your ",
		"stage 1 of 3 (20 %) open", "stage 3 of 3 (100 %) open", "completed: the gate held at every stage", "the health gate stopped apps/dw100-app/3.0.0 in stage 1",
		"The rollouts in the web console: " + r.URL + "/ui/t/" + r.Tenant.ID + "/products/" + r.Product.ID + "/groups/"} {
		if !strings.Contains(outc.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, outc.String())
		}
	}
}
