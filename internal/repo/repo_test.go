package repo_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/moat-iot/moat/internal/blob/fsblob"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/trust"
	"github.com/moat-iot/moat/internal/tuf"
)

type fixture struct {
	t                 *testing.T
	st                store.Store
	svc               *repo.Service
	online            *ecdsa.PrivateKey
	root, os, tenantK *ecdsa.PrivateKey
	tenantA, tenantB  tenant.ID
	keyRecord         trust.KeyID
	blobs             *fsblob.Store
	root1             []byte
	expires           time.Time
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signer(t *testing.T, k *ecdsa.PrivateKey) signature.Signer {
	t.Helper()
	s, err := keys.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, st: st, online: newKey(t), root: newKey(t), os: newKey(t), tenantK: newKey(t),
		expires: time.Now().Add(365 * 24 * time.Hour)}
	f.blobs, err = fsblob.Open(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	f.svc, err = repo.New(st, f.blobs, f.online, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	f.tenantA, f.tenantB = tenant.ID(ident.New(tenant.IDPrefix, now)), tenant.ID(ident.New(tenant.IDPrefix, now))
	pubPEM, err := keys.EncodePublicPEM(&f.tenantK.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f.keyRecord = trust.KeyID(ident.New(trust.IDPrefix, now))
	err = st.InTx(t.Context(), func(tx store.Tx) error {
		for _, id := range []tenant.ID{f.tenantA, f.tenantB} {
			if err := tx.Tenants().Create(t.Context(), tenant.Tenant{ID: id, Name: string(id), CreatedAt: now, UpdatedAt: now, Version: 1}); err != nil {
				return err
			}
		}
		tt, err := tx.ForTenant(f.tenantA)
		if err != nil {
			return err
		}
		if err := tt.Products().Create(t.Context(), product.Product{ID: product.ID(ident.New(product.IDPrefix, now)), TenantID: f.tenantA,
			Name: "DW100", CreatedAt: now, UpdatedAt: now, Version: 1}); err != nil {
			return err
		}
		return tt.SigningKeys().Create(t.Context(), trust.SigningKey{
			ID: f.keyRecord, TenantID: f.tenantA, Name: "release", TUFKeyID: keys.KeyID(&f.tenantK.PublicKey),
			Algorithm: trust.Algorithm, PublicKeyPEM: string(pubPEM), CreatedAt: now,
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	f.root1, err = tuf.NewRoot(signer(t, f.root), &f.root.PublicKey, &f.os.PublicKey, &f.online.PublicKey, f.expires)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) targets(version int64, appKeys ...*ecdsa.PublicKey) []byte {
	f.t.Helper()
	b, err := tuf.SignTargets(signer(f.t, f.os), version, f.expires, nil, appKeys)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// pkg packs an app image "apps/<name>/<version>" for product DW100 (or the given one) and
// uploads it for tenant A, returning its target.
func (f *fixture) pkg(path, productName string) tuf.TargetFile {
	f.t.Helper()
	parts := strings.Split(path, "/")
	dir := f.t.TempDir()
	manifest := `{"format":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","name":"` + parts[1] +
		`","kind":"app","version":"` + parts[2] + `","security_version":1,"product":"` + productName +
		`","app":{"entry_point":"bin/app","capabilities":{}}}`
	if err := os.WriteFile(filepath.Join(dir, "app.json"), []byte(manifest), 0o600); err != nil {
		f.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o700); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "app"), []byte("#!/bin/sh\n"), 0o700); err != nil {
		f.t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := image.Pack(f.t.Context(), dir, &buf); err != nil {
		f.t.Fatalf("Pack(%s): %v", path, err)
	}
	sum := sha256.Sum256(buf.Bytes())
	info, err := f.svc.AddBlob(f.t.Context(), f.tenantA, bytes.NewReader(buf.Bytes()), 1<<20)
	if err != nil {
		f.t.Fatal(err)
	}
	if info.Digest.Hex() != hex.EncodeToString(sum[:]) {
		f.t.Fatalf("AddBlob digest %s, want %x", info.Digest, sum)
	}
	return tuf.TargetFile{Length: info.Size, SHA256: info.Digest.Hex(), Custom: target.Custom{
		Kind: target.KindApp, Version: parts[2], SecurityVersion: 1, ComponentID: "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10", Product: productName}}
}

// at is tf with custom metadata that fits path (an OS path or another version), so that
// the signer accepts it and the server has to judge it.
func at(path string, tf tuf.TargetFile) tuf.TargetFile {
	parts := strings.Split(path, "/")
	tf.Custom.Version = parts[2]
	if parts[0] == "os" {
		tf.Custom.Kind, tf.Custom.Product, tf.Custom.Feeds = target.KindOS, "", []string{"Retail"}
	}
	return tf
}

// signAppsRaw signs apps.json version 1 listing tf at path with custom as its raw custom
// metadata, which tuf.SignApps would refuse to write.
func signAppsRaw(t *testing.T, k *ecdsa.PrivateKey, expires time.Time, path string, tf tuf.TargetFile, custom string) []byte {
	t.Helper()
	md := metadata.Targets(expires)
	sum, err := hex.DecodeString(tf.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	entry := &metadata.TargetFiles{Length: tf.Length, Hashes: metadata.Hashes{"sha256": sum}, Path: path}
	if custom != "" {
		raw := json.RawMessage(custom)
		entry.Custom = &raw
	}
	md.Signed.Targets[path] = entry
	if _, err := md.Sign(signer(t, k)); err != nil {
		t.Fatal(err)
	}
	b, err := md.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *fixture) apps(k *ecdsa.PrivateKey, version int64, paths ...string) []byte {
	f.t.Helper()
	targets := map[string]tuf.TargetFile{}
	for _, p := range paths {
		targets[p] = f.pkg(p, "DW100")
	}
	b, err := tuf.SignApps(signer(f.t, k), version, f.expires, targets)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// client refreshes a go-tuf updater, pinned to root 1, against the service's files for
// tenant t, with its cache in dir (reused across calls: a device that keeps its cache).
func (f *fixture) client(t tenant.ID, dir string) (*updater.Updater, error) {
	f.t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/metadata/")
		data, err := f.svc.File(r.Context(), t, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	f.t.Cleanup(srv.Close)
	cfg, err := config.New(srv.URL+"/metadata/", f.root1)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg.LocalMetadataDir = filepath.Join(dir, "metadata")
	cfg.LocalTargetsDir = filepath.Join(dir, "targets")
	cfg.RemoteTargetsURL = srv.URL + "/targets/"
	up, err := updater.New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return up, up.Refresh()
}

func TestRepo_PublishesAVerifiableTenantView(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	if _, err := f.svc.PutTargets(ctx, f.tenantA, f.targets(1, &f.tenantK.PublicKey), nil); !errors.Is(err, repo.ErrNotInitialized) {
		t.Errorf("PutTargets before a root = %v, want ErrNotInitialized", err)
	}
	wrongOnline := newKey(t)
	bad, _ := tuf.NewRoot(signer(t, f.root), &f.root.PublicKey, &f.os.PublicKey, &wrongOnline.PublicKey, f.expires)
	if _, err := f.svc.PutRoot(ctx, bad, nil); !errors.Is(err, repo.ErrWrongOnlineKey) {
		t.Errorf("PutRoot(root naming another online key) = %v, want ErrWrongOnlineKey", err)
	}
	if v, err := f.svc.PutRoot(ctx, f.root1, nil); err != nil || v != 1 {
		t.Fatalf("PutRoot(1.root.json) = %d, %v", v, err)
	}
	if _, err := f.svc.PutApps(ctx, f.tenantA, f.apps(f.tenantK, 1, "apps/dw100-app/1.0.0"), nil); err == nil {
		t.Error("PutApps before targets delegates apps = nil, want an error")
	}
	if _, err := f.svc.PutTargets(ctx, f.tenantA, f.targets(1, &f.tenantK.PublicKey), nil); err != nil {
		t.Fatalf("PutTargets = %v", err)
	}
	if _, err := f.svc.PutApps(ctx, f.tenantA, f.apps(f.tenantK, 1, "apps/dw100-app/1.0.0"), nil); err != nil {
		t.Fatalf("PutApps = %v", err)
	}
	dir := t.TempDir()
	up, err := f.client(f.tenantA, dir)
	if err != nil {
		t.Fatalf("go-tuf Refresh = %v", err)
	}
	if _, err := up.GetTargetInfo("apps/dw100-app/1.0.0"); err != nil {
		t.Errorf("GetTargetInfo(apps/dw100-app/1.0.0) = %v", err)
	}

	// A new Service on the same store (a restart, or another replica) goes on from the
	// stored versions: the client that already refreshed sees no rollback.
	svc2, err := repo.New(f.st, f.blobs, f.online, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc2
	if _, err := f.svc.PutApps(ctx, f.tenantA, f.apps(f.tenantK, 2, "apps/dw100-app/1.0.0", "apps/dw100-app/1.1.0"), nil); err != nil {
		t.Fatalf("PutApps v2 after restart = %v", err)
	}
	up, err = f.client(f.tenantA, dir)
	if err != nil {
		t.Fatalf("go-tuf Refresh after restart = %v", err)
	}
	if _, err := up.GetTargetInfo("apps/dw100-app/1.1.0"); err != nil {
		t.Errorf("GetTargetInfo(apps/dw100-app/1.1.0) after restart = %v", err)
	}

	// Tenant B has a root (the platform's) and nothing of A's.
	if _, err := f.svc.File(ctx, f.tenantB, "timestamp.json"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B: File(timestamp.json) = %v, want ErrNotFound", err)
	}
	if _, err := f.svc.File(ctx, f.tenantB, "1.apps.json"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B: File(1.apps.json) = %v, want ErrNotFound", err)
	}
	if b, err := f.svc.File(ctx, f.tenantB, "1.root.json"); err != nil || string(b) != string(f.root1) {
		t.Errorf("B: File(1.root.json) = %v, want the platform root", err)
	}
	// B cannot publish apps signed by A's key: B registered no key, and its targets do not
	// delegate to A's key.
	if _, err := f.svc.PutApps(ctx, f.tenantB, f.apps(f.tenantK, 1, "apps/x/1.0.0"), nil); err == nil {
		t.Error("B: PutApps signed by A's key = nil, want an error")
	}
}

// TestRepo_RevokedKeySignsNothing: once a tenant revokes its key, apps.json signed by it
// is refused at once, even though the operator-signed delegation still names the key.
func TestRepo_RevokedKeySignsNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	if _, err := f.svc.PutRoot(ctx, f.root1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutTargets(ctx, f.tenantA, f.targets(1, &f.tenantK.PublicKey), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutApps(ctx, f.tenantA, f.apps(f.tenantK, 1, "apps/dw100-app/1.0.0"), nil); err != nil {
		t.Fatal(err)
	}
	err := f.st.InTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(f.tenantA)
		if err != nil {
			return err
		}
		_, err = tt.SigningKeys().Revoke(ctx, f.keyRecord, time.Now())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := f.svc.File(ctx, f.tenantA, "timestamp.json")
	if _, err := f.svc.PutApps(ctx, f.tenantA, f.apps(f.tenantK, 2, "apps/evil/6.6.6"), nil); !errors.Is(err, repo.ErrNoActiveKey) {
		t.Errorf("PutApps signed by a revoked key = %v, want ErrNoActiveKey", err)
	}
	after, _ := f.svc.File(ctx, f.tenantA, "timestamp.json")
	if string(before) != string(after) {
		t.Error("a refused PutApps changed the published timestamp")
	}
	// A key never registered is refused the same way.
	if _, err := f.svc.PutApps(ctx, f.tenantA, f.apps(newKey(t), 2, "apps/evil/6.6.6"), nil); err == nil {
		t.Error("PutApps signed by an unregistered key = nil, want an error")
	}
}

// TestRepo_RootRotationReachesTenants: a rotated root is served to every tenant, and a
// tenant's next publish builds on it.
func TestRepo_RootRotationReachesTenants(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.svc.PutRoot(ctx, f.root1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutTargets(ctx, f.tenantA, f.targets(1, &f.tenantK.PublicKey), nil); err != nil {
		t.Fatal(err)
	}
	newRoot := newKey(t)
	root2, err := tuf.SignRoot([]signature.Signer{signer(t, f.root), signer(t, newRoot)}, 2, f.expires, tuf.RootKeys{
		Root: []*ecdsa.PublicKey{&newRoot.PublicKey}, RootThreshold: 1, OS: &f.os.PublicKey, Online: &f.online.PublicKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := f.svc.PutRoot(ctx, root2, nil); err != nil || v != 2 {
		t.Fatalf("PutRoot(2) = %d, %v", v, err)
	}
	// A root signed only by a stranger is refused.
	stranger := newKey(t)
	root3, _ := tuf.SignRoot([]signature.Signer{signer(t, stranger)}, 3, f.expires, tuf.RootKeys{
		Root: []*ecdsa.PublicKey{&stranger.PublicKey}, RootThreshold: 1, OS: &f.os.PublicKey, Online: &f.online.PublicKey,
	})
	if _, err := f.svc.PutRoot(ctx, root3, nil); err == nil {
		t.Error("PutRoot(3 signed by a stranger) = nil, want an error")
	}
	if _, err := f.svc.PutApps(ctx, f.tenantA, f.apps(f.tenantK, 1, "apps/dw100-app/1.0.0"), nil); err != nil {
		t.Fatalf("PutApps after rotation = %v", err)
	}
	up, err := f.client(f.tenantA, t.TempDir())
	if err != nil {
		t.Fatalf("go-tuf Refresh after root rotation = %v", err)
	}
	if _, err := up.GetTargetInfo("apps/dw100-app/1.0.0"); err != nil {
		t.Errorf("GetTargetInfo after rotation = %v", err)
	}
}

// TestRepo_RejectsTargetsThatAreNotTheTenantsPackages: a signed apps.json may only name image
// packages the tenant uploaded, at the path their manifest names, for one of its products.
func TestRepo_RejectsTargetsThatAreNotTheTenantsPackages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	if _, err := f.svc.PutRoot(ctx, f.root1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutTargets(ctx, f.tenantA, f.targets(1, &f.tenantK.PublicKey), nil); err != nil {
		t.Fatal(err)
	}
	good := f.pkg("apps/dw100-app/1.0.0", "DW100")
	cases := map[string]map[string]tuf.TargetFile{
		"never uploaded":       {"apps/dw100-app/1.0.0": {Length: good.Length, SHA256: strings.Repeat("ab", 32), Custom: good.Custom}},
		"wrong length":         {"apps/dw100-app/1.0.0": {Length: good.Length + 1, SHA256: good.SHA256, Custom: good.Custom}},
		"path is not manifest": {"apps/dw100-app/2.0.0": at("apps/dw100-app/2.0.0", good)},
		"other name":           {"apps/evil-app/1.0.0": good},
		"unknown product":      {"apps/dw200-app/1.0.0": f.pkg("apps/dw200-app/1.0.0", "DW200")},
		"signed for another product": {"apps/dw100-app/1.0.0": func() tuf.TargetFile {
			tf := good
			tf.Custom.Product = "WM200"
			return tf
		}()},
	}
	for name, targets := range cases {
		signed, err := tuf.SignApps(signer(t, f.tenantK), 1, f.expires, targets)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.PutApps(ctx, f.tenantA, signed, nil); !errors.Is(err, repo.ErrBadTarget) {
			t.Errorf("%s: PutApps = %v, want ErrBadTarget", name, err)
		}
	}
	// Custom metadata that the catalog or a device would refuse is refused at upload: the
	// server once accepted it and read a missing security_version as 0.
	for name, custom := range map[string]string{
		"no custom":           "",
		"no security_version": `{"kind":"app","version":"1.0.0","component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","product":"DW100"}`,
		"no product":          `{"kind":"app","version":"1.0.0","security_version":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10"}`,
		"unknown field":       `{"kind":"app","version":"1.0.0","security_version":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","product":"DW100","x":1}`,
	} {
		signed := signAppsRaw(t, f.tenantK, f.expires, "apps/dw100-app/1.0.0", good, custom)
		if _, err := f.svc.PutApps(ctx, f.tenantA, signed, nil); !errors.Is(err, repo.ErrBadTarget) || !errors.Is(err, target.ErrBadCustom) {
			t.Errorf("%s: PutApps = %v, want ErrBadTarget and target.ErrBadCustom", name, err)
		}
	}
	// targets.json may name as an OS image only an uploaded OS package at its own path.
	for name, osTargets := range map[string]map[string]tuf.TargetFile{
		"app as OS":    {"os/dw100-app/1.0.0": at("os/dw100-app/1.0.0", good)},
		"not uploaded": {"os/moat-os/1.0.0": at("os/moat-os/1.0.0", tuf.TargetFile{Length: 10, SHA256: strings.Repeat("ef", 32), Custom: good.Custom})},
	} {
		signedT, err := tuf.SignTargets(signer(t, f.os), 2, f.expires, osTargets, []*ecdsa.PublicKey{&f.tenantK.PublicKey})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.PutTargets(ctx, f.tenantA, signedT, nil); !errors.Is(err, repo.ErrBadTarget) {
			t.Errorf("%s: PutTargets = %v, want ErrBadTarget", name, err)
		}
	}
	signed, _ := tuf.SignApps(signer(t, f.tenantK), 1, f.expires, map[string]tuf.TargetFile{"apps/dw100-app/1.0.0": good})
	if _, err := f.svc.PutApps(ctx, f.tenantA, signed, nil); err != nil {
		t.Errorf("PutApps(the uploaded package) = %v", err)
	}
}

// TestRepo_RefreshKeepsTimestampFresh: a server that keeps running re-signs timestamps before
// they expire, so a client never sees a frozen repository; a fresh one is left alone.
func TestRepo_RefreshKeepsTimestampFresh(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	if _, err := f.svc.PutRoot(ctx, f.root1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutTargets(ctx, f.tenantA, f.targets(1, &f.tenantK.PublicKey), nil); err != nil {
		t.Fatal(err)
	}
	if n, err := f.svc.Refresh(ctx); err != nil || n != 0 {
		t.Errorf("Refresh of a fresh view = %d, %v; want 0 changed", n, err)
	}
	// Twenty hours later (more than half the 24 h timestamp lifetime), on a restarted server.
	later, err := repo.New(f.st, f.blobs, f.online, func() time.Time { return time.Now().Add(20 * time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	before, _ := later.File(ctx, f.tenantA, "timestamp.json")
	if n, err := later.Refresh(ctx); err != nil || n != 1 {
		t.Fatalf("Refresh 20 h later = %d, %v; want 1 changed", n, err)
	}
	after, _ := later.File(ctx, f.tenantA, "timestamp.json")
	if bytes.Equal(before, after) {
		t.Error("timestamp.json unchanged after a refresh that should re-sign it")
	}
	// A client refreshing after that still verifies (no rollback, fresh expiry).
	if _, err := f.client(f.tenantA, t.TempDir()); err != nil {
		t.Errorf("go-tuf Refresh after the server refreshed = %v", err)
	}
}
