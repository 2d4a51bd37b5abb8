package demo

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/tuf"
)

// fleetSize is how many DW100s the demo manufactures; the last one runs a tampered app.
const fleetSize = 5

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
	return map[string]tuf.TargetFile{d.Result.OSPath: {Length: info.Size, SHA256: d.Result.OSSHA256, Custom: map[string]any{
		"kind": "os", "version": m.Version, "security_version": m.SecurityVersion, "component_id": m.ComponentID,
		"feeds": []any{"Retail", "RetailEval"},
	}}}, nil
}

// demoDevice is one simulated DW100 of the demo fleet.
type demoDevice struct {
	key  *identity.FileKey
	dir  string
	cert tls.Certificate
	ok   bool
}

// fleet plays the device side: the platform manufactures DW100s and registers their
// identity keys, Contoso claims them into DW100/Production and deploys its app there; every
// device attests what it booted and gets a 24-hour certificate, except one that runs a
// tampered app and is refused; Contoso then ships app 1.1.0 and every attested device
// installs it over mutual TLS, verified against the pinned root.
func (d *Demo) fleet(ctx context.Context, op, contoso *client.Client, out io.Writer, step func(string, ...any)) error {
	tenant, prod := d.Result.Tenant.ID, d.Result.Product
	var production client.DeviceGroup
	for _, g := range d.Result.Groups {
		if g.Name == "Production" {
			production = g
		}
	}
	appPath := "apps/" + d.Result.AppManifest.Name + "/" + d.Result.AppManifest.Version
	if _, err := contoso.CreateDeployment(ctx, tenant, prod.ID, production.ID, client.DeploymentCreate{Target: appPath}); err != nil {
		return fmt.Errorf("deploy %s: %w", appPath, err)
	}
	step("Contoso deployed %s to DW100/Production", appPath)

	devs := make([]*demoDevice, fleetSize)
	ids := make([]string, fleetSize)
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
		devs[i], ids[i] = &demoDevice{key: k, dir: dir}, string(k.ID())
	}
	step("the platform manufactured %d DW100s under %s and registered their identity keys (device ID = SHA-256 of the public key)", fleetSize, filepath.Join(d.dir, "devices"))
	if _, err := contoso.ClaimDevices(ctx, tenant, client.DeviceClaim{DeviceIDs: ids}); err != nil {
		return fmt.Errorf("claim devices: %w", err)
	}
	group := "DW100/Production"
	for _, id := range ids {
		dev, err := contoso.GetDevice(ctx, tenant, id)
		if err != nil {
			return err
		}
		if _, err := contoso.UpdateDevice(ctx, tenant, id, dev.Version, client.DeviceUpdate{DeviceGroup: &group}); err != nil {
			return fmt.Errorf("move device to %s: %w", group, err)
		}
	}
	step("Contoso claimed them and put them in %s", group)

	if err := d.attestFleet(ctx, contoso, devs, out, step); err != nil {
		return err
	}
	if err := d.shipUpdate(ctx, contoso, production, devs, out, step); err != nil {
		return err
	}
	chain, err := contoso.GetDeviceCAChain(ctx, tenant)
	if err != nil {
		return err
	}
	d.Result.CAChain = filepath.Join(d.dir, "contoso", "contoso-ca-chain.pem")
	if err := os.WriteFile(d.Result.CAChain, chain, 0o600); err != nil {
		return err
	}
	step("Contoso's cloud trusts its devices with %s (moat ca-certificate download)", d.Result.CAChain)
	return nil
}

// attestFleet has every device attest the images it booted: the published OS and app,
// except the last device, whose app was tampered with after signing.
func (d *Demo) attestFleet(ctx context.Context, contoso *client.Client, devs []*demoDevice, out io.Writer, step func(string, ...any)) error {
	anon, err := client.New(d.Result.URL, client.WithCACertPEM(d.srv.CAPEM))
	if err != nil {
		return err
	}
	appBytes, err := os.ReadFile(d.Result.AppImage)
	if err != nil {
		return err
	}
	m := d.Result.AppManifest
	osM := attest.Measurement{Kind: "os", Path: d.Result.OSPath, SHA256: sum(d.osImage), Version: "1.0.0", SecurityVersion: 1}
	appM := attest.Measurement{Kind: "app", Path: "apps/" + m.Name + "/" + m.Version, SHA256: sum(appBytes), Version: m.Version, SecurityVersion: m.SecurityVersion}
	tampered := appM
	tampered.SHA256 = sum(append(appBytes, "# one more line\n"...))

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "      DEVICE\tATTESTATION\tCERTIFICATE")
	for i, dv := range devs {
		app := appM
		if i == len(devs)-1 {
			app = tampered
		}
		id := string(dv.key.ID())
		res := DeviceResult{ID: id}
		n, err := anon.CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: id})
		if err != nil {
			return err
		}
		ev, err := attest.Sign(dv.key, attest.Evidence{DeviceID: id, Nonce: n.Nonce, Time: time.Now(), Measurements: []attest.Measurement{osM, app}})
		if err != nil {
			return err
		}
		is, err := anon.Attest(ctx, ev)
		var ce *client.Error
		switch {
		case errors.As(err, &ce) && ce.Status == http.StatusForbidden:
			rec, err := contoso.GetDevice(ctx, d.Result.Tenant.ID, id)
			if err != nil {
				return err
			}
			if rec.Attestation != nil {
				res.Refusal, res.Detail = rec.Attestation.Refusal, rec.Attestation.Detail
			}
			fmt.Fprintf(tw, "      %s...\trefused: %s\t- (support sees: %s)\n", id[:16], res.Refusal, res.Detail)
		case err != nil:
			return fmt.Errorf("attest device %s: %w", id, err)
		default:
			cert, err := tlsCertificate(is.ChainPEM, dv.key)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dv.dir, "certificate.pem"), []byte(is.ChainPEM), 0o600); err != nil {
				return err
			}
			dv.cert, dv.ok = cert, true
			res.Serial, res.NotAfter = is.Serial, is.NotAfter
			fmt.Fprintf(tw, "      %s...\tcertificate issued\tserial %s..., until %s\n", id[:16], is.Serial[:12], is.NotAfter.Format(time.RFC3339))
		}
		d.Result.Devices = append(d.Result.Devices, res)
	}
	step("each device attested what it booted (nonce, evidence signed by its identity key):")
	return tw.Flush()
}

// shipUpdate has Contoso publish and deploy app 1.1.0 and every attested device install it.
func (d *Demo) shipUpdate(ctx context.Context, contoso *client.Client, production client.DeviceGroup, devs []*demoDevice, out io.Writer, step func(string, ...any)) error {
	src := filepath.Join(d.dir, "contoso", "dw100-app-1.1.0")
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o700); err != nil {
		return err
	}
	manifest := strings.Replace(dw100App, `"version": "1.0.0"`, `"version": "1.1.0"`, 1)
	if err := os.WriteFile(filepath.Join(src, image.AppManifestFile), []byte(manifest), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "dw100"), []byte(strings.Replace(dw100Main, "wash cycle", "wash cycle (1.1.0: eco mode)", 1)), 0o700); err != nil { //nolint:gosec // G306: executable entry point
		return err
	}
	var buf bytes.Buffer
	m, err := image.Pack(ctx, src, &buf)
	if err != nil {
		return err
	}
	tenant := d.Result.Tenant.ID
	info, err := contoso.UploadBlob(ctx, tenant, bytes.NewReader(buf.Bytes()))
	if err != nil {
		return err
	}
	path := "apps/" + m.Name + "/" + m.Version
	d.apps[path] = tuf.TargetFile{Length: info.Size, SHA256: strings.TrimPrefix(info.Digest, "sha256:"), Custom: map[string]any{
		"kind": string(m.Kind), "version": m.Version, "security_version": m.SecurityVersion, "product": m.Product, "component_id": m.ComponentID}}
	apps, err := tuf.SignApps(d.appSigner, d.Result.AppsVersion+1, d.expires, d.apps)
	if err != nil {
		return err
	}
	v, err := contoso.PutTenantApps(ctx, tenant, apps)
	if err != nil {
		return err
	}
	d.Result.AppsVersion = v.Version
	if _, err := contoso.CreateDeployment(ctx, tenant, d.Result.Product.ID, production.ID, client.DeploymentCreate{Target: path}); err != nil {
		return err
	}
	step("Contoso signed %s into apps.json v%d offline and deployed it to DW100/Production", path, v.Version)

	root, err := os.ReadFile(d.Result.TrustAnchor)
	if err != nil {
		return err
	}
	dirKey, err := update.DirectorKeyFromRoot(root)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.srv.CAPEM)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "      DEVICE\tINSTALLED (verified against the pinned root)")
	for i, dv := range devs {
		if !dv.ok {
			fmt.Fprintf(tw, "      %s...\tnothing: no certificate, no updates\n", d.Result.Devices[i].ID[:16])
			continue
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{dv.cert}}}}
		installed, err := d.install(ctx, hc, root, dirKey, dv)
		hc.CloseIdleConnections()
		if err != nil {
			return fmt.Errorf("device %s: %w", dv.key.ID(), err)
		}
		d.Result.Devices[i].Installed = installed
		fmt.Fprintf(tw, "      %s...\t%s\n", d.Result.Devices[i].ID[:16], strings.Join(installed, ", "))
	}
	step("every attested device fetched its assignment (signed by the director key) over mutual TLS and installed it:")
	return tw.Flush()
}

// install is one device's update check: assignment, TUF verification, download, commit.
func (d *Demo) install(ctx context.Context, hc *http.Client, root []byte, dirKey *ecdsa.PublicKey, dv *demoDevice) ([]string, error) {
	base := d.Result.URL + "/api/v1/device/tuf/"
	upd, err := update.New(update.Config{
		MetadataURL: base + "metadata/", TargetsURL: base + "targets/", Root: root, DirectorKey: dirKey,
		DeviceID: string(dv.key.ID()), TenantID: d.Result.Tenant.ID, StateDir: filepath.Join(dv.dir, "update"),
		HTTPClient: hc, Now: time.Now, FetchOptions: blob.FetchOptions{StallTimeout: 30 * time.Second, Timeout: 10 * time.Minute},
		MaxMetadataBytes: 1 << 20,
	})
	if err != nil {
		return nil, err
	}
	api, err := client.New(d.Result.URL, client.WithHTTPClient(hc))
	if err != nil {
		return nil, err
	}
	raw, err := api.GetAssignment(ctx)
	if err != nil {
		return nil, err
	}
	plan, err := upd.Check(ctx, raw)
	if err != nil {
		return nil, err
	}
	var installed []string
	for _, im := range plan.Images {
		if err := upd.Download(ctx, im, filepath.Join(dv.dir, im.Kind+".img")); err != nil {
			return nil, err
		}
		if err := upd.Commit(im.Kind, im.SecurityVersion); err != nil {
			return nil, err
		}
		installed = append(installed, im.Path)
	}
	return installed, nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// tlsCertificate pairs an issued chain with the identity key for mutual TLS.
func tlsCertificate(chainPEM string, key *identity.FileKey) (tls.Certificate, error) {
	var cert tls.Certificate
	rest := []byte(chainPEM)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		cert.Certificate = append(cert.Certificate, b.Bytes)
	}
	if len(cert.Certificate) == 0 {
		return cert, errors.New("no certificate in the issued chain")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return cert, err
	}
	cert.Leaf, cert.PrivateKey = leaf, identity.CryptoSigner(key)
	return cert, nil
}
