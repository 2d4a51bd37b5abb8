package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tuf"
)

// dw100App is the DW100 application's manifest as the demo ships it (the same as
// examples/dw100/app/app.json, written out so that a built binary needs no source tree).
const dw100App = `{
  "format": 1,
  "component_id": "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10",
  "name": "dw100-app",
  "kind": "app",
  "version": "1.0.0",
  "security_version": 1,
  "product": "DW100",
  "app": {
    "entry_point": "bin/dw100",
    "capabilities": {
      "allowed_hosts": ["telemetry.contoso.example:8883"],
      "gpio": [4, 17],
      "adc": [0, 1, 2]
    }
  }
}
`

// offline plays Contoso's side that never touches the server's secrets: it makes its image
// signing key on its own machine and registers only the public half, then packs the DW100
// application image.
func (d *Demo) offline(ctx context.Context, contoso *client.Client, out io.Writer, step func(string, ...any)) error {
	dir := filepath.Join(d.dir, "contoso")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := keys.Generate()
	if err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "contoso-release.key")
	// Unencrypted but 0600: a demo has nobody to type a passphrase.
	if err := keys.WritePrivate(keyFile, key, nil); err != nil {
		return fmt.Errorf("write Contoso's signing key: %w", err)
	}
	pubPEM, err := keys.EncodePublicPEM(&key.PublicKey)
	if err != nil {
		return err
	}
	k, err := contoso.CreateSigningKey(ctx, d.Result.Tenant.ID, client.SigningKeyCreate{Name: "release", PublicKeyPEM: string(pubPEM)})
	if err != nil {
		return fmt.Errorf("register Contoso's signing key: %w", err)
	}
	d.Result.SigningKey, d.Result.KeyFile = k, keyFile
	step("Contoso made its offline signing key %s and registered only the public half (TUF key ID %s...)", keyFile, k.TUFKeyID[:16])

	src := filepath.Join(dir, "dw100-app")
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "app.json"), []byte(dw100App), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "dw100"), appScript(d.exe, appRuns), 0o700); err != nil { //nolint:gosec // G306: an entry point must be executable; the packer keeps only that bit
		return err
	}
	pkg := filepath.Join(dir, "dw100-app-1.0.0.img")
	f, err := os.Create(pkg)
	if err != nil {
		return err
	}
	h := sha256.New()
	m, err := image.Pack(ctx, src, io.MultiWriter(f, h))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pack the DW100 app: %w", err)
	}
	d.Result.AppImage, d.Result.AppSHA256, d.Result.AppManifest = pkg, hex.EncodeToString(h.Sum(nil)), m
	step("Contoso packed %s %s (security version %d) for %s: %s, SHA-256 %s...",
		m.Name, m.Version, m.SecurityVersion, m.Product, pkg, d.Result.AppSHA256[:16])
	return nil
}

// publish plays the signed-update split: the platform operator makes its offline root and
// OS keys, uploads the first root naming the server's online key, and delegates Contoso's
// apps to Contoso's registered key; Contoso uploads the DW100 package and signs apps.json
// offline. The server signs only snapshot and timestamp.
func (d *Demo) publish(ctx context.Context, op, contoso *client.Client, out io.Writer, step func(string, ...any)) error {
	dir := filepath.Join(d.dir, "platform")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	rootK, err := keys.Generate()
	if err != nil {
		return err
	}
	osK, err := keys.Generate()
	if err != nil {
		return err
	}
	for name, k := range map[string]*ecdsa.PrivateKey{"root.key": rootK, "os.key": osK} {
		if err := keys.WritePrivate(filepath.Join(dir, name), k, nil); err != nil {
			return err
		}
	}
	ok, err := op.GetOnlineKey(ctx)
	if err != nil {
		return err
	}
	online, err := keys.ParsePublicPEM([]byte(ok.PublicKeyPEM))
	if err != nil {
		return err
	}
	rootSigner, err := keys.Signer(rootK)
	if err != nil {
		return err
	}
	expires := time.Now().Add(365 * 24 * time.Hour)
	root1, err := tuf.NewRoot(rootSigner, &rootK.PublicKey, &osK.PublicKey, online, expires)
	if err != nil {
		return err
	}
	anchor := filepath.Join(dir, "1.root.json")
	if err := os.WriteFile(anchor, root1, 0o600); err != nil {
		return err
	}
	if _, err := op.PutPlatformRoot(ctx, root1); err != nil {
		return fmt.Errorf("upload the platform root: %w", err)
	}
	d.Result.TrustAnchor = anchor
	step("the platform operator made its offline root and OS keys (%s) and published root.json v1; devices pin %s", dir, anchor)
	if err := d.platformCA(ctx, op, rootK, dir, step); err != nil {
		return err
	}

	tenant := d.Result.Tenant.ID
	del, err := op.GetTenantDelegation(ctx, tenant)
	if err != nil {
		return err
	}
	var pubs []*ecdsa.PublicKey
	for _, k := range del.Keys {
		p, err := keys.ParsePublicPEM([]byte(k.PublicKeyPEM))
		if err != nil {
			return err
		}
		pubs = append(pubs, p)
	}
	osSigner, err := keys.Signer(osK)
	if err != nil {
		return err
	}
	osTarget, err := d.publishOS(ctx, op, step)
	if err != nil {
		return err
	}
	targets, err := tuf.SignTargets(osSigner, del.TargetsVersion+1, expires, osTarget, pubs)
	if err != nil {
		return err
	}
	if _, err := op.PutTenantTargets(ctx, tenant, targets); err != nil {
		return fmt.Errorf("upload Contoso's targets: %w", err)
	}
	step("the platform operator signed Contoso's targets.json offline: %s on the Retail and RetailEval feeds, and Contoso's apps delegated to its registered key", d.Result.OSPath)

	f, err := os.Open(d.Result.AppImage)
	if err != nil {
		return err
	}
	info, err := contoso.UploadBlob(ctx, tenant, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("upload the DW100 package: %w", err)
	}
	key, err := keys.ReadPrivate(d.Result.KeyFile, func() ([]byte, error) { return nil, keys.ErrNoPassphrase })
	if err != nil {
		return err
	}
	signer, err := keys.Signer(key)
	if err != nil {
		return err
	}
	m := d.Result.AppManifest
	path := "apps/" + m.Name + "/" + m.Version
	d.apps = map[string]tuf.TargetFile{path: {
		Length: info.Size, SHA256: info.Digest[len("sha256:"):],
		Custom: target.Custom{Kind: target.KindApp, Version: m.Version, SecurityVersion: m.SecurityVersion, Product: m.Product, ComponentID: m.ComponentID},
	}}
	d.appSigner, d.expires = signer, expires
	apps, err := tuf.SignApps(signer, 1, expires, d.apps)
	if err != nil {
		return err
	}
	v, err := contoso.PutTenantApps(ctx, tenant, apps)
	if err != nil {
		return fmt.Errorf("publish Contoso's apps.json: %w", err)
	}
	d.Result.AppsVersion = v.Version
	step("Contoso uploaded the package and signed apps.json v%d offline: %s is published", v.Version, path)
	fmt.Fprintf(out, "    Contoso's repository (for any TUF client): %s/api/v1/tenants/%s/tuf/metadata/ (targets: .../tuf/targets/)\n", d.Result.URL, tenant)
	return nil
}
