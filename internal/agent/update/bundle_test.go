package update_test

import (
	"bytes"
	"crypto/ecdsa"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/internal/tuf"
)

// TestBundle_BootsAfterRootRotation is the path from the update client to verified boot:
// after two root rotations the client's bundle carries the root chain from the pinned root,
// the images it planned install into boot slots with it and verify from the pinned root;
// a damaged kept root is fetched again and a kept root go-tuf never accepted is dropped.
func TestBundle_BootsAfterRootRotation(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	ctx := t.Context()
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	gs, err := p.Admin.ListDeviceGroups(ctx, p.Tenant, p.Product, client.ListOptions{Name: "Production"})
	if err != nil || len(gs.Items) != 1 {
		t.Fatalf("group Production: %v", err)
	}
	if _, err := p.Admin.CreateDeployment(ctx, p.Tenant, p.Product, gs.Items[0].ID, client.DeploymentCreate{Target: app.Path}); err != nil {
		t.Fatal(err)
	}
	dv := newDevice(t, p, "DW100/Production", osImg, app)
	if _, err := dv.upd.Bundle(ctx); err == nil {
		t.Error("Bundle() before any Check = nil error")
	}

	ok, err := p.Op.GetOnlineKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	online, err := keys.ParsePublicPEM([]byte(ok.PublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	rootKey := p.RootKey
	for v := int64(2); v <= 3; v++ {
		next := genKey(t)
		root, err := tuf.SignRoot([]signature.Signer{tufSigner(t, rootKey), tufSigner(t, next)}, v, p.Expires, tuf.RootKeys{
			Root: []*ecdsa.PublicKey{&next.PublicKey}, RootThreshold: 1, OS: &p.OSKey.PublicKey, Online: online,
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Op.PutPlatformRoot(ctx, root); err != nil {
			t.Fatal(err)
		}
		rootKey = next
	}

	raw, err := dv.api.GetAssignment(ctx)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := dv.upd.Check(ctx, raw)
	if err != nil {
		t.Fatalf("Check after the rotations: %v", err)
	}
	if len(plan.Images) != 2 {
		t.Fatalf("plan = %+v, want the OS and the app", plan)
	}
	b, err := dv.upd.Bundle(ctx)
	if err != nil {
		t.Fatalf("Bundle() = %v", err)
	}
	if len(b.Roots) != 2 || rootVersionOf(t, b.Roots[0]) != 2 || rootVersionOf(t, b.Roots[1]) != 3 || len(b.Targets) == 0 || len(b.Apps) == 0 {
		t.Fatalf("Bundle() = %d roots, %d bytes of targets, %d of apps; want roots 2 and 3, targets and apps", len(b.Roots), len(b.Targets), len(b.Apps))
	}

	slots, err := boot.New(boot.Config{StateDir: filepath.Join(dv.dir, "boot"), Root: p.Root, Tries: boot.DefaultTries, MaxPayloadBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range plan.Images {
		dst := filepath.Join(dv.dir, im.Kind+".pkg")
		if err := dv.upd.Download(ctx, im, dst); err != nil {
			t.Fatalf("Download %s: %v", im.Path, err)
		}
		in := boot.Installed{Path: im.Path, SHA256: im.SHA256, Version: im.Version, SecurityVersion: im.SecurityVersion}
		if err := slots.Install(ctx, image.Kind(im.Kind), dst, boot.Bundle(b), in); err != nil {
			t.Fatalf("boot Install(%s) with the client's bundle = %v", im.Path, err)
		}
	}
	c, rejected, err := slots.VerifyApp()
	if err != nil || c.Image.Path != app.Path || c.Image.Metadata.Root != 3 || len(rejected) != 0 {
		t.Fatalf("VerifyApp() = %+v, %v, %v, want %s verified through root 3", c, rejected, err, app.Path)
	}

	// A damaged kept root is downloaded again; one above the trusted version is removed.
	roots := filepath.Join(dv.dir, "state", "tuf", "roots")
	if err := os.WriteFile(filepath.Join(roots, "2.root.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(roots, "4.root.json"), b.Roots[1], 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := dv.upd.Bundle(ctx)
	if err != nil {
		t.Fatalf("Bundle() with a damaged kept root = %v", err)
	}
	if len(again.Roots) != 2 || !bytes.Equal(again.Roots[0], b.Roots[0]) || !bytes.Equal(again.Roots[1], b.Roots[1]) {
		t.Errorf("Bundle() with a damaged kept root did not restore the chain")
	}
	if _, err := os.Stat(filepath.Join(roots, "4.root.json")); !os.IsNotExist(err) {
		t.Errorf("kept root above the trusted version: stat = %v, want it removed", err)
	}
	if kept, err := os.ReadFile(filepath.Join(roots, "2.root.json")); err != nil || !bytes.Equal(kept, b.Roots[0]) {
		t.Errorf("kept 2.root.json after Bundle: %v, want the downloaded root again", err)
	}
}

func rootVersionOf(t *testing.T, raw []byte) int64 {
	t.Helper()
	r, err := metadata.Root().FromBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	return r.Signed.Version
}

// TestBundle_FieldsMatchBoot keeps update.Bundle convertible to boot.Bundle.
func TestBundle_FieldsMatchBoot(t *testing.T) {
	t.Parallel()
	b := update.Bundle{Roots: [][]byte{[]byte("2")}, Targets: []byte("t"), Apps: []byte("a")}
	if got := boot.Bundle(b); len(got.Roots) != 1 || string(got.Targets) != "t" || string(got.Apps) != "a" {
		t.Errorf("boot.Bundle(%+v) = %+v", b, got)
	}
}
