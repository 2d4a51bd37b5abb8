package repo_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/tuf"
)

// pack packs an image package of the kind ("app" for product DW100, or "os").
func pack(t *testing.T, kind, name, version string) []byte {
	t.Helper()
	dir := t.TempDir()
	manifest := `{"format":1,"component_id":"9d2f4a61-7c3e-4e8b-b5a0-1e6c8f3d2b47","name":"` + name + `","kind":"os","version":"` + version + `","security_version":1}`
	file := image.OSManifestFile
	if kind == "app" {
		manifest = `{"format":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","name":"` + name +
			`","kind":"app","version":"` + version + `","security_version":1,"product":"DW100","app":{"entry_point":"bin/app","capabilities":{}}}`
		file = image.AppManifestFile
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "app"), []byte("#!/bin/sh\necho "+version+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := image.Pack(t.Context(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (f *fixture) upload(t tenant.ID, pkg []byte) blob.Info {
	f.t.Helper()
	info, err := f.svc.AddBlob(f.t.Context(), t, bytes.NewReader(pkg), 1<<20)
	if err != nil {
		f.t.Fatalf("AddBlob: %v", err)
	}
	return info
}

func (f *fixture) stored(d blob.Digest) bool {
	f.t.Helper()
	_, err := f.blobs.Stat(f.t.Context(), d)
	if err != nil && !errors.Is(err, blob.ErrNotFound) {
		f.t.Fatal(err)
	}
	return err == nil
}

func (f *fixture) gc(now time.Time) (int, int64) {
	f.t.Helper()
	n, b, err := f.svc.GC(f.t.Context(), now)
	if err != nil {
		f.t.Fatalf("GC(%v) = %v", now, err)
	}
	return n, b
}

// TestGC_RemovesUnpublished: a package uploaded and never published is gone once the grace
// period is over; before that it stays. Content another tenant uploaded too goes only when
// neither refers to it.
func TestGC_RemovesUnpublished(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	lone := f.upload(f.tenantA, pack(t, "app", "dw100-app", "9.9.9"))
	sharedPkg := pack(t, "app", "dw100-app", "8.8.8")
	shared := f.upload(f.tenantA, sharedPkg)
	f.upload(f.tenantB, sharedPkg)

	if n, _ := f.gc(time.Now().Add(time.Hour)); n != 0 || !f.stored(lone.Digest) {
		t.Fatalf("GC within the grace period removed %d files (unpublished still stored: %v), want 0", n, f.stored(lone.Digest))
	}
	n, b := f.gc(time.Now().Add(repo.BlobGrace + time.Hour))
	if n != 2 || b != lone.Size+shared.Size {
		t.Errorf("GC after the grace period = %d files, %d bytes, want 2, %d", n, b, lone.Size+shared.Size)
	}
	for _, d := range []blob.Digest{lone.Digest, shared.Digest} {
		if f.stored(d) {
			t.Errorf("blob %s still stored after GC", d)
		}
	}
	for _, tid := range []tenant.ID{f.tenantA, f.tenantB} {
		st, err := f.svc.Storage(t.Context(), tid)
		if err != nil || st.UsedBytes != 0 || st.Blobs != 0 {
			t.Errorf("Storage(%s) after GC = %+v, %v, want nothing used", tid, st, err)
		}
	}
}

// TestGC_KeepsPublished: what the current apps.json and targets.json name stays, also when
// another tenant's record of the same content goes; what an apps.json superseded within the
// grace period named stays until that period is over.
func TestGC_KeepsPublished(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	t0 := time.Now().UTC()
	clock := t0
	var err error
	f.svc, err = repo.New(f.st, f.blobs, f.online, func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutRoot(ctx, f.root1, nil); err != nil {
		t.Fatal(err)
	}
	osInfo, err := f.svc.AddPlatformBlob(ctx, bytes.NewReader(pack(t, "os", "moat-os", "1.0.0")), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	strayOS, err := f.svc.AddPlatformBlob(ctx, bytes.NewReader(pack(t, "os", "moat-os", "0.9.0")), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	targets, err := tuf.SignTargets(signer(t, f.os), 1, f.expires,
		map[string]tuf.TargetFile{"os/moat-os/1.0.0": {Length: osInfo.Size, SHA256: osInfo.Digest.Hex(), Custom: target.Custom{
			Kind: target.KindOS, Version: "1.0.0", SecurityVersion: 1, ComponentID: "9d2f4a61-7c3e-4e8b-b5a0-1e6c8f3d2b47", Feeds: []string{"Retail"}}}}, []*ecdsa.PublicKey{&f.tenantK.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutTargets(ctx, f.tenantA, targets, nil); err != nil {
		t.Fatal(err)
	}
	pkg1 := pack(t, "app", "dw100-app", "1.0.0")
	v1 := f.publish(1, "apps/dw100-app/1.0.0", pkg1)
	// B uploads A's published bytes and never publishes: B's record goes, the file stays.
	f.upload(f.tenantB, pkg1)
	clock = t0.Add(2 * time.Hour)
	v2 := f.publish(2, "apps/dw100-app/1.1.0", pack(t, "app", "dw100-app", "1.1.0"))

	// Past the uploads' grace, within the grace of apps.json 1 (superseded at t0+2h): only
	// the OS package that no targets.json names goes.
	if n, _ := f.gc(t0.Add(repo.BlobGrace + time.Hour)); n != 1 {
		t.Errorf("GC within the grace of superseded apps.json 1 removed %d files, want 1 (the stray OS package)", n)
	}
	for name, d := range map[string]blob.Digest{"OS target": osInfo.Digest, "app 1.0.0 (superseded recently)": v1, "app 1.1.0 (current)": v2} {
		if !f.stored(d) {
			t.Errorf("%s removed by GC", name)
		}
	}
	if f.stored(strayOS.Digest) {
		t.Error("an OS package no targets.json names is still stored after GC")
	}
	st, err := f.svc.Storage(ctx, f.tenantB)
	if err != nil || st.Blobs != 0 {
		t.Errorf("B's storage after GC = %+v, %v, want its unpublished record gone", st, err)
	}
	// Past the grace of the superseded version: 1.0.0 goes, the current ones stay.
	if n, _ := f.gc(t0.Add(repo.BlobGrace + 3*time.Hour)); n != 1 {
		t.Errorf("GC past the grace of apps.json 1 removed %d files, want 1", n)
	}
	if f.stored(v1) || !f.stored(v2) || !f.stored(osInfo.Digest) {
		t.Errorf("after GC: 1.0.0 stored %v (want false), 1.1.0 %v, OS %v (want true)", f.stored(v1), f.stored(v2), f.stored(osInfo.Digest))
	}
	if size, err := readSize(f, f.tenantA, v2); err != nil || size == 0 {
		t.Errorf("A's record of its current app = %d, %v", size, err)
	}
}

func readSize(f *fixture, t tenant.ID, d blob.Digest) (int64, error) {
	var n int64
	err := f.st.InReadTx(f.t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		n, err = tt.Blobs().Size(f.t.Context(), d.String())
		return err
	})
	return n, err
}

// TestUpload_RejectsRandomBytes: bytes that are not an image package of the right kind are
// refused while they stream, and leave no file and no record.
func TestUpload_RejectsRandomBytes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	random := make([]byte, 256<<10)
	rand.Read(random)
	app := pack(t, "app", "dw100-app", "1.0.0")
	osPkg := pack(t, "os", "moat-os", "1.0.0")
	cases := []struct {
		name string
		body []byte
		want error
	}{
		{"Random", random, repo.ErrNotImage},
		{"Truncated", app[:len(app)-1], repo.ErrNotImage},
		{"TrailingData", append(append([]byte{}, app...), 0), repo.ErrNotImage},
		{"PayloadBitFlip", flipLast(app), repo.ErrNotImage},
		{"OSPackageAsTenant", osPkg, repo.ErrWrongKind},
	}
	for _, tc := range cases {
		_, err := f.svc.AddBlob(t.Context(), f.tenantA, bytes.NewReader(tc.body), 1<<20)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: AddBlob = %v, want %v", tc.name, err, tc.want)
		}
		if f.stored(blob.Digest(sha(tc.body))) {
			t.Errorf("%s: refused bytes were stored", tc.name)
		}
	}
	if _, err := f.svc.AddPlatformBlob(t.Context(), bytes.NewReader(app), 1<<20); !errors.Is(err, repo.ErrWrongKind) {
		t.Errorf("AddPlatformBlob(app package) = %v, want ErrWrongKind", err)
	}
	st, err := f.svc.Storage(t.Context(), f.tenantA)
	if err != nil || st.Blobs != 0 {
		t.Errorf("Storage after refusals = %+v, %v, want no blobs", st, err)
	}
}

// TestUpload_RejectsOverQuota: an upload past the tenant's quota is refused, before it is
// read when its size is declared, and stores nothing; a re-upload of stored content takes
// nothing more.
func TestUpload_RejectsOverQuota(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	first := pack(t, "app", "dw100-app", "1.0.0")
	second := pack(t, "app", "dw100-app", "2.0.0")
	quota := int64(len(first) + len(second)/2)
	if _, err := f.svc.SetStorageQuota(ctx, f.tenantA, &quota, nil); err != nil {
		t.Fatal(err)
	}
	f.upload(f.tenantA, first)
	for _, size := range []int64{-1, int64(len(second))} {
		_, err := f.svc.UploadBlob(ctx, f.tenantA, repo.Upload{Body: bytes.NewReader(second), Size: size, MaxBytes: 1 << 20}, nil)
		var qe *repo.QuotaError
		if !errors.As(err, &qe) || !errors.Is(err, repo.ErrQuotaExceeded) || qe.QuotaBytes != quota || qe.UsedBytes != int64(len(first)) {
			t.Errorf("UploadBlob(over quota, declared size %d) = %v, want a QuotaError of %d bytes with %d used", size, err, quota, len(first))
		}
		if f.stored(blob.Digest(sha(second))) {
			t.Error("an upload over quota was stored")
		}
	}
	st, err := f.svc.Storage(ctx, f.tenantA)
	if err != nil || st.UsedBytes != int64(len(first)) || st.Blobs != 1 || st.QuotaBytes != quota || st.QuotaDefault {
		t.Errorf("Storage = %+v, %v, want %d of %d used by 1 blob", st, err, len(first), quota)
	}
	// Tenant B has its own usage, and the default quota.
	st, err = f.svc.Storage(ctx, f.tenantB)
	if err != nil || st.UsedBytes != 0 || st.QuotaBytes != repo.DefaultStorageQuotaBytes || !st.QuotaDefault {
		t.Errorf("B: Storage = %+v, %v, want the default quota, nothing used", st, err)
	}
	f.upload(f.tenantB, second)
	f.upload(f.tenantB, second)
	st, err = f.svc.Storage(ctx, f.tenantB)
	if err != nil || st.UsedBytes != int64(len(second)) || st.Blobs != 1 {
		t.Errorf("B: Storage after uploading the same package twice = %+v, %v, want %d bytes in 1 blob", st, err, len(second))
	}
}

func flipLast(b []byte) []byte {
	out := append([]byte{}, b...)
	out[len(out)-1] ^= 1
	return out
}

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

// publish uploads pkg for tenant A and publishes apps.json version v naming only it.
func (f *fixture) publish(v int64, path string, pkg []byte) blob.Digest {
	f.t.Helper()
	info := f.upload(f.tenantA, pkg)
	apps, err := tuf.SignApps(signer(f.t, f.tenantK), v, f.expires, map[string]tuf.TargetFile{path: {Length: info.Size, SHA256: info.Digest.Hex(), Custom: target.Custom{
		Kind: target.KindApp, Version: path[strings.LastIndexByte(path, '/')+1:], SecurityVersion: 1,
		ComponentID: "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10", Product: "DW100"}}})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.svc.PutApps(f.t.Context(), f.tenantA, apps, nil); err != nil {
		f.t.Fatalf("PutApps(%d, %s) = %v", v, path, err)
	}
	return info.Digest
}
