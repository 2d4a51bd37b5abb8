package demo

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tuf"
)

// platformCA plays the platform operator's offline X.509 side: the root key certifies
// itself as the root of device identity, and then every pending tenant device CA
// (Contoso's was created with the tenant), as `moat platform init` and `moat platform
// ca-sign` do.
func (d *Demo) platformCA(ctx context.Context, op *client.Client, rootK *ecdsa.PrivateKey, dir string, step func(string, ...any)) error {
	rootPEM, err := deviceca.NewRootCertificate(rootK, "moat platform root", time.Now(), 20*365*24*time.Hour)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "root-ca.pem"), rootPEM, 0o600); err != nil {
		return err
	}
	if _, err := op.PutPlatformCertificate(ctx, rootPEM); err != nil {
		return fmt.Errorf("upload the platform root certificate: %w", err)
	}
	root, err := deviceca.ParseRootCertificate(rootPEM)
	if err != nil {
		return err
	}
	pending, err := op.ListPendingDeviceCAs(ctx, client.ListOptions{})
	if err != nil {
		return err
	}
	for _, ca := range pending.Items {
		cert, err := deviceca.SignCA(root, rootK, []byte(ca.CSRPEM), time.Now(), 5*365*24*time.Hour)
		if err != nil {
			return err
		}
		if _, err := op.PutDeviceCACertificate(ctx, ca.TenantID, ca.ID, cert); err != nil {
			return fmt.Errorf("activate device CA %s: %w", ca.ID, err)
		}
		step("the platform root certified device CA %s of tenant %s offline; it issues that tenant's device certificates", ca.ID, ca.TenantID)
	}
	return nil
}

// publishOS packs and uploads the platform's OS image and returns its target for the
// tenants' targets.json.
func (d *Demo) publishOS(ctx context.Context, op *client.Client, step func(string, ...any)) (map[string]tuf.TargetFile, error) {
	src := filepath.Join(d.dir, "platform", "moat-os")
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o700); err != nil {
		return nil, err
	}
	manifest := `{"format":1,"component_id":"0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f","name":"moat-os","kind":"os","version":"1.0.0","security_version":1}`
	if err := os.WriteFile(filepath.Join(src, image.OSManifestFile), []byte(manifest), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "moat-agent"), []byte("#!/bin/sh\necho moat-os 1.0.0\n"), 0o700); err != nil { //nolint:gosec // G306: executable payload
		return nil, err
	}
	var buf bytes.Buffer
	m, err := image.Pack(ctx, src, &buf)
	if err != nil {
		return nil, fmt.Errorf("pack the OS image: %w", err)
	}
	d.osImage = buf.Bytes()
	info, err := op.UploadPlatformBlob(ctx, bytes.NewReader(buf.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("upload the OS image: %w", err)
	}
	d.Result.OSPath, d.Result.OSSHA256 = "os/"+m.Name+"/"+m.Version, strings.TrimPrefix(info.Digest, "sha256:")
	step("the platform operator packed and uploaded OS image %s (SHA-256 %s...)", d.Result.OSPath, d.Result.OSSHA256[:16])
	return map[string]tuf.TargetFile{d.Result.OSPath: {Length: info.Size, SHA256: d.Result.OSSHA256, Custom: target.Custom{
		Kind: target.KindOS, Version: m.Version, SecurityVersion: m.SecurityVersion, ComponentID: m.ComponentID,
		Feeds: []string{"Retail", "RetailEval"},
	}}}, nil
}

// demoDevice is one simulated DW100 of the demo fleet.
type demoDevice struct {
	key   *identity.FileKey
	dir   string
	group string
	dw    *periph.DW100 // its simulated dishwasher, once its agent runs
	agent *agent.Agent
}

// fleetGroups are the groups of the demo fleet's story devices: the last one is a
// field-test device, which gets app 2.0.0 first.
var fleetGroups = []string{"Production", "Production", "Production", "Field Test"}

// rolloutFleet is how many further DW100s the demo runs in Production, so that the staged
// rollouts of the rollout story have stages of a few devices each. They are registered and
// claimed with the others, but their agents start with the rollout story (they install 1.1.0
// from nothing first). They run real agents and
// the demo's app like the others but are not connected to Contoso's cloud, and their doors
// stand open, so that their apps wait instead of running wash cycles: that keeps the demo
// light, and the cloud's fleet comparisons to the first four.
const rolloutFleet = 16

// fleet plays the device side with real agents (in process, each with its own state
// directory and a simulated DW100): the platform manufactures DW100s and registers their
// identity keys, Contoso claims them and deploys its app; each agent, knowing only its key
// and the pinned root, is refused at first (nothing booted), installs its group's OS and
// app with the recovery grant, reboots into them and attests. A device with a tampered app
// is refused with its reason. Contoso then ships app 1.1.0 to everyone, and a 2.0.0 that
// crashes at start to the field-test device, which rolls it back and reports it.
func (d *Demo) fleet(ctx context.Context, op, contoso *client.Client, out io.Writer, step func(string, ...any)) error {
	tenant, prod := d.Result.Tenant.ID, d.Result.Product
	appPath := "apps/" + d.Result.AppManifest.Name + "/" + d.Result.AppManifest.Version
	for _, g := range []string{"Production", "Field Test"} {
		if err := d.deploy(ctx, contoso, g, appPath); err != nil {
			return err
		}
	}
	step("Contoso deployed %s to DW100/Production and DW100/Field Test", appPath)

	// The story devices, then the rollout fleet, then the tampered device.
	devs := make([]*demoDevice, len(fleetGroups)+rolloutFleet+1)
	ids := make([]string, len(devs))
	for i := range devs {
		dir := filepath.Join(d.dir, "devices", fmt.Sprintf("dw100-%04d", i+1))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		k, err := identity.CreateFileKey(filepath.Join(dir, "identity.key"))
		if err != nil {
			return err
		}
		pub, err := keys.EncodePublicPEM(k.Public())
		if err != nil {
			return err
		}
		if _, err := op.RegisterDevice(ctx, client.DeviceRegister{PublicKeyPEM: string(pub)}); err != nil {
			return fmt.Errorf("register device: %w", err)
		}
		group := "Production"
		if i < len(fleetGroups) {
			group = fleetGroups[i]
		}
		devs[i], ids[i] = &demoDevice{key: k, dir: dir, group: group}, string(k.ID())
	}
	step("the platform manufactured %d DW100s under %s and registered their identity keys (device ID = SHA-256 of the public key)", len(devs), filepath.Join(d.dir, "devices"))
	if _, err := contoso.ClaimDevices(ctx, tenant, client.DeviceClaim{DeviceIDs: ids}); err != nil {
		return fmt.Errorf("claim devices: %w", err)
	}
	for i, id := range ids {
		dev, err := contoso.GetDevice(ctx, tenant, id)
		if err != nil {
			return err
		}
		group := prod.Name + "/" + devs[i].group
		if _, err := contoso.UpdateDevice(ctx, tenant, id, dev.Version, client.DeviceUpdate{DeviceGroup: &group}); err != nil {
			return fmt.Errorf("move device to %s: %w", group, err)
		}
	}
	step("Contoso claimed them and put them in their device groups")

	if err := d.startCloud(ctx, contoso, d.log.With("component", "cloud"), step); err != nil {
		return err
	}
	fleet, extra := devs[:len(fleetGroups)], devs[len(fleetGroups):len(devs)-1]
	if err := d.startAgents(ctx, fleet, true); err != nil {
		return err
	}
	for _, dv := range fleet {
		d.Result.CloudDevices = append(d.Result.CloudDevices, string(dv.key.ID()))
	}
	step("%d devices run moat agent with a simulated DW100; each knows only its identity key, the pinned root and its cloud's address", len(fleet))
	osPath := d.Result.OSPath
	if err := d.converge(ctx, contoso, fleet, osPath, appPath); err != nil {
		return err
	}
	if err := d.fleetTable(ctx, contoso, fleet, out, "every device was refused at first (nothing booted), installed its OS and app with the recovery grant, rebooted into them and attested:"); err != nil {
		return err
	}
	if err := d.cloudTelemetry(ctx, fleet, out, step); err != nil {
		return err
	}
	if err := d.sellAndClaim(ctx, fleet, step); err != nil {
		return err
	}
	d.failAndRunLow(fleet, step)
	if err := d.attestTampered(ctx, contoso, devs[len(devs)-1], out, step); err != nil {
		return err
	}

	v11, err := d.publishApp(ctx, contoso, "1.1.0", appRuns, step)
	if err != nil {
		return err
	}
	for _, g := range []string{"Production", "Field Test"} {
		if err := d.deploy(ctx, contoso, g, v11); err != nil {
			return err
		}
	}
	// No nudge: each agent's long-poll hears of the deployment at once.
	if err := d.converge(ctx, contoso, fleet, osPath, v11); err != nil {
		return err
	}
	if err := d.fleetTable(ctx, contoso, fleet, out, "Contoso deployed "+v11+": every agent heard of it at once (long-poll), downloaded it into its inactive slot, verified it against the pinned root, started it, saw it report healthy and committed it:"); err != nil {
		return err
	}

	v2, err := d.publishApp(ctx, contoso, "2.0.0", appCrashesAtStart, step)
	if err != nil {
		return err
	}
	if err := d.deploy(ctx, contoso, "Field Test", v2); err != nil {
		return err
	}
	field := fleet[len(fleet)-1]
	reports, err := d.waitRollback(ctx, contoso, field, v2)
	if err != nil {
		return err
	}
	if err := d.converge(ctx, contoso, fleet, osPath, v11); err != nil {
		return err
	}
	d.v11 = v11
	step("Contoso deployed %s, which crashes at start, to DW100/Field Test: device %s... crashed %d times on trial, rolled back to %s, and reported it:",
		v2, string(field.key.ID())[:16], boot.DefaultTries, v11)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "      KIND\tCODE\tIMAGE\tDETAIL")
	for _, r := range reports {
		detail := r.Report.Message
		if r.Report.ExitCode != nil {
			detail = fmt.Sprintf("exit %d, stderr: %s", *r.Report.ExitCode, strings.TrimSpace(r.Report.StderrTail))
		}
		fmt.Fprintf(tw, "      %s\t%s\t%s\t%s\n", r.Report.Kind, r.Report.Code, r.Report.ImagePath+r.Report.Target, detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	d.Result.FieldDevice = string(field.key.ID())
	if err := d.collect(ctx, contoso, append(fleet[:len(fleet):len(fleet)], devs[len(devs)-1])); err != nil {
		return err
	}
	// The rollout fleet's agents start with the rollout story, so that their first boot
	// holds up neither the summary nor the owners' story.
	d.running, d.extra = append(fleet[:len(fleet):len(fleet)], extra...), extra
	for _, dv := range extra {
		d.Result.RolloutFleet = append(d.Result.RolloutFleet, string(dv.key.ID()))
	}
	return nil
}

// deploy deploys target to the DW100 group named group.
func (d *Demo) deploy(ctx context.Context, contoso *client.Client, group, target string) error {
	for _, g := range d.Result.Groups {
		if g.Name == group {
			_, err := contoso.CreateDeployment(ctx, d.Result.Tenant.ID, d.Result.Product.ID, g.ID, client.DeploymentCreate{Target: target})
			if err != nil {
				return fmt.Errorf("deploy %s to %s: %w", target, group, err)
			}
			return nil
		}
	}
	return fmt.Errorf("no device group %s", group)
}

// startAgents starts one in-process agent per device, connected to Contoso's cloud when
// cloud is set; they stop when the demo does.
func (d *Demo) startAgents(ctx context.Context, devs []*demoDevice, cloud bool) error {
	root, err := os.ReadFile(d.Result.TrustAnchor)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.srv.CAPEM)
	// Each agent names its device (device_id) itself; a further attribute here named it
	// twice on every line. One fleet log for every call, so that the fleet warns once.
	if d.fleetLog == nil {
		d.fleetLog = slog.New(newFleetLog(d.agentLog.Handler()))
	}
	log := d.fleetLog
	cloudCAs := d.cloudAgentCAs()
	for _, dv := range devs {
		dw := periph.NewDW100()
		// The heater warms the water and the air as the app runs it, SimSpeed times faster
		// than a real DW100 (the demo's app ticks that much faster too).
		start := time.Now()
		dw.RealTime(func() time.Time { return start.Add(time.Since(start) * SimSpeed) })
		dv.dw = dw
		if !cloud {
			dw.SetDoorOpen(true) // the rollout fleet idles: see rolloutFleet
		}
		cfg := agent.Config{
			StateDir: filepath.Join(dv.dir, "state"), ServerURL: d.Result.DeviceURL, ServerCAs: pool, Root: root,
			Identity: dv.key, Backend: dw, Now: time.Now, CheckInterval: 30 * time.Second,
			HealthTimeout: 10 * time.Second, Logger: log, Product: d.Result.Product.Name,
		}
		if cloud {
			cfg.Cloud = &agent.CloudConfig{Broker: "mqtts://" + d.Result.CloudMQTT, CAs: cloudCAs}
		}
		a, err := agent.New(cfg)
		if err != nil {
			return err
		}
		d.agents = append(d.agents, a)
		dv.agent = a
		d.agentsWG.Go(func() {
			if err := a.Run(ctx); err != nil && ctx.Err() == nil {
				d.agentLog.Error("agent stopped", "err", err)
			}
		})
	}
	return nil
}

// converge waits until every device attested running osPath and appPath.
func (d *Demo) converge(ctx context.Context, contoso *client.Client, devs []*demoDevice, osPath, appPath string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		done := 0
		for _, dv := range devs {
			rec, err := contoso.GetDevice(ctx, d.Result.Tenant.ID, string(dv.key.ID()))
			if err != nil {
				return err
			}
			if runs(rec, osPath, appPath) {
				done++
			}
		}
		if done == len(devs) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d devices attested running %s and %s within 2 minutes", done, len(devs), osPath, appPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runs reports whether the device's last attestation succeeded with exactly these images.
func runs(rec client.Device, paths ...string) bool {
	a := rec.Attestation
	if a == nil || a.Refusal != "" || len(a.Images) != len(paths) {
		return false
	}
	for i, p := range paths {
		if a.Images[i].Path != p {
			return false
		}
	}
	return true
}

// fleetTable prints what each device runs, as the security service knows it.
func (d *Demo) fleetTable(ctx context.Context, contoso *client.Client, devs []*demoDevice, out io.Writer, title string) error {
	fmt.Fprintf(out, "  - %s\n", title)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "      DEVICE\tGROUP\tRUNS (attested)\tCERTIFICATE")
	for _, dv := range devs {
		rec, err := contoso.GetDevice(ctx, d.Result.Tenant.ID, string(dv.key.ID()))
		if err != nil {
			return err
		}
		var paths []string
		for _, im := range rec.Attestation.Images {
			paths = append(paths, im.Path)
		}
		cert := "-"
		if rec.Certificate != nil {
			cert = fmt.Sprintf("serial %.12s..., until %s", rec.Certificate.Serial, rec.Certificate.NotAfter.Format(time.RFC3339))
		}
		fmt.Fprintf(tw, "      %.16s...\t%s\t%s\t%s\n", rec.ID, dv.group, strings.Join(paths, ", "), cert)
	}
	return tw.Flush()
}

// attestTampered has a device whose app was changed after signing attest by hand: it is
// refused, and support staff see why.
func (d *Demo) attestTampered(ctx context.Context, contoso *client.Client, dv *demoDevice, out io.Writer, step func(string, ...any)) error {
	anon, err := client.New(d.Result.DeviceURL, client.WithCACertPEM(d.srv.CAPEM))
	if err != nil {
		return err
	}
	appBytes, err := os.ReadFile(d.Result.AppImage)
	if err != nil {
		return err
	}
	m := d.Result.AppManifest
	osM := attest.Measurement{Kind: "os", Path: d.Result.OSPath, SHA256: sum(d.osImage), Version: "1.0.0", SecurityVersion: 1}
	tampered := attest.Measurement{Kind: "app", Path: "apps/" + m.Name + "/" + m.Version, SHA256: sum(append(appBytes, "# one more line\n"...)),
		Version: m.Version, SecurityVersion: m.SecurityVersion}
	id := string(dv.key.ID())
	n, err := anon.CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: id})
	if err != nil {
		return err
	}
	ev, err := attest.Sign(dv.key, attest.Evidence{DeviceID: id, Nonce: n.Nonce, Time: time.Now(), Measurements: []attest.Measurement{osM, tampered}})
	if err != nil {
		return err
	}
	_, err = anon.Attest(ctx, ev)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		return fmt.Errorf("the tampered device was not refused: %w", err)
	}
	rec, err := contoso.GetDevice(ctx, d.Result.Tenant.ID, id)
	if err != nil {
		return err
	}
	step("device %.16s... booted an app changed after signing: refused (the caller sees only \"refused\"); support staff see %s: %s",
		id, rec.Attestation.Refusal, rec.Attestation.Detail)
	return nil
}

// publishApp packs the DW100 app at version (a launcher for the app built into this
// binary, or a faulty one: see appMode), signs it into apps.json offline and uploads it.
// The app that crashes at start also raises the security version (it is never committed,
// so no device's floor rises); the others keep security version 1, so that a rollout can be
// rolled back to the release before it.
func (d *Demo) publishApp(ctx context.Context, contoso *client.Client, version string, mode appMode, step func(string, ...any)) (string, error) {
	src := filepath.Join(d.dir, "contoso", "dw100-app-"+version)
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o700); err != nil {
		return "", err
	}
	manifest := strings.Replace(dw100App, `"version": "1.0.0"`, `"version": "`+version+`"`, 1)
	if mode == appCrashesAtStart {
		manifest = strings.Replace(manifest, `"security_version": 1`, `"security_version": 2`, 1)
	}
	if err := os.WriteFile(filepath.Join(src, image.AppManifestFile), []byte(manifest), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "dw100"), appScript(d.exe, mode), 0o700); err != nil { //nolint:gosec // G306: executable entry point
		return "", err
	}
	var buf bytes.Buffer
	m, err := image.Pack(ctx, src, &buf)
	if err != nil {
		return "", err
	}
	tenant := d.Result.Tenant.ID
	info, err := contoso.UploadBlob(ctx, tenant, bytes.NewReader(buf.Bytes()))
	if err != nil {
		return "", err
	}
	path := "apps/" + m.Name + "/" + m.Version
	d.apps[path] = tuf.TargetFile{Length: info.Size, SHA256: strings.TrimPrefix(info.Digest, "sha256:"), Custom: target.Custom{
		Kind: target.KindApp, Version: m.Version, SecurityVersion: m.SecurityVersion, Product: m.Product, ComponentID: m.ComponentID}}
	apps, err := tuf.SignApps(d.appSigner, d.Result.AppsVersion+1, d.expires, d.apps)
	if err != nil {
		return "", err
	}
	v, err := contoso.PutTenantApps(ctx, tenant, apps)
	if err != nil {
		return "", err
	}
	d.Result.AppsVersion = v.Version
	step("Contoso signed %s into apps.json v%d offline", path, v.Version)
	return path, nil
}

// waitRollback waits until the device reported the crash of target and its rollback.
func (d *Demo) waitRollback(ctx context.Context, contoso *client.Client, dv *demoDevice, target string) ([]client.ErrorReportRecord, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rs, err := contoso.ListErrorReports(ctx, d.Result.Tenant.ID, string(dv.key.ID()), client.ListOptions{Limit: 100})
		if err != nil {
			return nil, err
		}
		var mine []client.ErrorReportRecord
		crashed, rolled := false, false
		for _, r := range rs.Items {
			if r.Report.ImagePath == target || r.Report.Target == target {
				mine = append(mine, r)
			}
			crashed = crashed || r.Report.Kind == "app_crash" && r.Report.ImagePath == target
			rolled = rolled || r.Report.Code == "app_rolled_back"
		}
		if crashed && rolled {
			return mine, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("device %s did not report the rollback of %s within 2 minutes", dv.key.ID(), target)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// collect records each device's story in the result.
func (d *Demo) collect(ctx context.Context, contoso *client.Client, devs []*demoDevice) error {
	for _, dv := range devs {
		rec, err := contoso.GetDevice(ctx, d.Result.Tenant.ID, string(dv.key.ID()))
		if err != nil {
			return err
		}
		res := DeviceResult{ID: rec.ID}
		if a := rec.Attestation; a != nil {
			res.Refusal, res.Detail = a.Refusal, a.Detail
			if a.Refusal == "" {
				for _, im := range a.Images {
					res.Installed = append(res.Installed, im.Path)
				}
			}
		}
		if rec.Certificate != nil {
			res.Serial, res.NotAfter = rec.Certificate.Serial, rec.Certificate.NotAfter
		}
		d.Result.Devices = append(d.Result.Devices, res)
	}
	return nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
