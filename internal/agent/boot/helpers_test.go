package boot_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tuf"
)

// repo is an image repository signed the way the platform and the tenant sign it offline
// (internal/tuf): a root chain, targets.json with OS images and the "apps" delegation, and
// apps.json with the tenant's apps. Each publish returns the bundle a device's update client
// would hold afterwards.
type repo struct {
	t                              testing.TB
	rootKey, osKey, appKey, online *ecdsa.PrivateKey
	root                           []byte   // 1.root.json, what devices pin
	roots                          [][]byte // 2.root.json ...
	expires                        time.Time
	os, apps                       map[string]tuf.TargetFile
	targetsV, appsV                int64
	targets, appsJSON              []byte
	dir                            string // where packages are written
}

func newRepo(t testing.TB) *repo {
	return newRepoExpiring(t, time.Now().Add(365*24*time.Hour))
}

func newRepoExpiring(t testing.TB, expires time.Time) *repo {
	t.Helper()
	r := &repo{t: t, expires: expires, os: map[string]tuf.TargetFile{}, apps: map[string]tuf.TargetFile{}, dir: t.TempDir()}
	r.rootKey, r.osKey, r.appKey, r.online = genKey(t), genKey(t), genKey(t), genKey(t)
	var err error
	r.root, err = tuf.NewRoot(signer(t, r.rootKey), &r.rootKey.PublicKey, &r.osKey.PublicKey, &r.online.PublicKey, expires)
	must(t, err)
	r.signTargets()
	return r
}

func genKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := keys.Generate()
	must(t, err)
	return k
}

func signer(t testing.TB, k *ecdsa.PrivateKey) signature.Signer {
	t.Helper()
	s, err := keys.Signer(k)
	must(t, err)
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (r *repo) signTargets() {
	r.t.Helper()
	r.targetsV++
	var err error
	r.targets, err = tuf.SignTargets(signer(r.t, r.osKey), r.targetsV, r.expires, r.os, []*ecdsa.PublicKey{&r.appKey.PublicKey})
	must(r.t, err)
}

func (r *repo) signApps() {
	r.t.Helper()
	r.appsV++
	var err error
	r.appsJSON, err = tuf.SignApps(signer(r.t, r.appKey), r.appsV, r.expires, r.apps)
	must(r.t, err)
}

// rotateRoot signs the next root.json with the current and a new root key; the new key
// holds the root role from then on.
func (r *repo) rotateRoot() {
	r.t.Helper()
	next := genKey(r.t)
	root, err := tuf.SignRoot([]signature.Signer{signer(r.t, r.rootKey), signer(r.t, next)}, int64(len(r.roots))+2, r.expires, tuf.RootKeys{
		Root: []*ecdsa.PublicKey{&next.PublicKey}, RootThreshold: 1, OS: &r.osKey.PublicKey, Online: &r.online.PublicKey,
	})
	must(r.t, err)
	r.roots, r.rootKey = append(r.roots, root), next
}

// bundle is what the update client trusts now.
func (r *repo) bundle() boot.Bundle {
	return boot.Bundle{Roots: slices.Clone(r.roots), Targets: r.targets, Apps: r.appsJSON}
}

// pkg is a packed image package, written to a file.
type pkg struct {
	kind    image.Kind
	path    string
	version string
	sv      uint32
	sha     string
	length  int64
	file    string
}

// componentID is the component ID pack writes into the manifest.
func (p pkg) componentID() string {
	if p.kind == image.KindOS {
		return "0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f"
	}
	return "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10"
}

func (p pkg) installed() boot.Installed {
	return boot.Installed{Path: p.path, SHA256: p.sha, Version: p.version, SecurityVersion: p.sv}
}

// pack packs an image: an OS with bin/moat-agent, or the app "dw100-app" with bin/app.
func (r *repo) pack(kind image.Kind, name, version string, sv uint32) pkg {
	r.t.Helper()
	src := r.t.TempDir()
	var manifest, file, exe string
	if kind == image.KindOS {
		file, exe = image.OSManifestFile, boot.OSEntryPoint
		manifest = fmt.Sprintf(`{"format":1,"component_id":"0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f","name":%q,"kind":"os","version":%q,"security_version":%d}`,
			name, version, sv)
	} else {
		file, exe = image.AppManifestFile, "bin/app"
		manifest = fmt.Sprintf(`{"format":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","name":%q,"kind":"app","version":%q,"security_version":%d,"product":"DW100","app":{"entry_point":"bin/app","capabilities":{}}}`,
			name, version, sv)
	}
	must(r.t, os.WriteFile(filepath.Join(src, file), []byte(manifest), 0o600))
	must(r.t, os.MkdirAll(filepath.Join(src, "bin"), 0o700))
	must(r.t, os.WriteFile(filepath.Join(src, filepath.FromSlash(exe)), []byte("#!/bin/sh\necho "+name+" "+version+"\n"), 0o700))
	must(r.t, os.MkdirAll(filepath.Join(src, "share", "doc"), 0o700))
	must(r.t, os.WriteFile(filepath.Join(src, "share", "doc", "README"), []byte(strings.Repeat(name+" ", 100)), 0o600))
	var buf bytes.Buffer
	_, err := image.Pack(r.t.Context(), src, &buf)
	must(r.t, err)
	sum := sha256.Sum256(buf.Bytes())
	p := pkg{kind: kind, version: version, sv: sv, sha: hex.EncodeToString(sum[:]), length: int64(buf.Len()),
		file: filepath.Join(r.dir, fmt.Sprintf("%s-%s-%s.pkg", kind, name, version))}
	p.path = "apps/" + name + "/" + version
	if kind == image.KindOS {
		p.path = "os/" + name + "/" + version
	}
	must(r.t, os.WriteFile(p.file, buf.Bytes(), 0o600))
	return p
}

// publish signs p into the repository at its own path and returns the new bundle.
func (r *repo) publish(p pkg) boot.Bundle {
	r.t.Helper()
	return r.publishAt(p, p.path)
}

// publishAt signs p's bytes as the target at path.
func (r *repo) publishAt(p pkg, path string) boot.Bundle {
	r.t.Helper()
	tf := tuf.TargetFile{Length: p.length, SHA256: p.sha, Custom: target.Custom{
		Kind: string(p.kind), Version: path[strings.LastIndexByte(path, '/')+1:], SecurityVersion: p.sv, ComponentID: p.componentID()}}
	if p.kind == image.KindOS {
		tf.Custom.Feeds = []string{"Retail"}
	} else {
		tf.Custom.Product = "DW100"
	}
	if p.kind == image.KindOS {
		r.os[path] = tf
		r.signTargets()
	} else {
		r.apps[path] = tf
		r.signApps()
	}
	return r.bundle()
}

// newSlots is a device's slots under a new state directory, pinning r's first root.
func newSlots(t testing.TB, r *repo) *boot.Slots {
	t.Helper()
	return openSlots(t, r, t.TempDir())
}

// openSlots opens the slots of dir: a reboot, when dir was used before.
func openSlots(t testing.TB, r *repo, dir string) *boot.Slots {
	t.Helper()
	s, err := boot.New(boot.Config{StateDir: dir, Root: r.root, Tries: 3, MaxPayloadBytes: 1 << 20})
	must(t, err)
	return s
}

// install installs p with bundle b and fails the test on error.
func install(t testing.TB, s *boot.Slots, p pkg, b boot.Bundle) {
	t.Helper()
	if err := s.Install(t.Context(), p.kind, p.file, b, p.installed()); err != nil {
		t.Fatalf("Install(%s) = %v", p.path, err)
	}
}

func launch(t testing.TB, s *boot.Slots) boot.Decision {
	t.Helper()
	d, err := s.Launch()
	if err != nil {
		t.Fatalf("Launch() = %v", err)
	}
	return d
}

func record(t testing.TB, s *boot.Slots) boot.Record {
	t.Helper()
	rec, err := s.Record()
	must(t, err)
	return rec
}

// flipByte flips one bit of the byte in the middle of a file.
func flipByte(t testing.TB, name string) {
	t.Helper()
	b, err := os.ReadFile(name)
	must(t, err)
	b[len(b)/2] ^= 0x01
	must(t, os.WriteFile(name, b, 0o600))
}
