package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
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

const dw100Main = `#!/bin/sh
# DW100 dishwasher application (demo placeholder until the device runtime lands).
echo "dw100: wash cycle"
`

// offline plays Contoso's side that never touches the server's secrets: it makes its image
// signing key on its own machine and registers only the public half, then packs the DW100
// application image. Publishing signed images comes with the TUF repository
// (docs/design/updates.md).
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
	if err := os.WriteFile(filepath.Join(src, "bin", "dw100"), []byte(dw100Main), 0o700); err != nil { //nolint:gosec // G306: an entry point must be executable; the packer keeps only that bit
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
	fmt.Fprintln(out, "    (publishing signed images to devices comes with the TUF repository: docs/design/updates.md)")
	return nil
}
