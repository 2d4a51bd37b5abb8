package boot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/target"
)

// BundleFormat is the format of a slot's bundle.json this code reads and writes.
const BundleFormat = 1

// Limits on a slot's bundle.json.
const (
	// MaxBundleBytes bounds bundle.json.
	MaxBundleBytes = 16 << 20
	// MaxRoots bounds the root chain a bundle carries.
	MaxRoots = 256
)

// appsRole is the delegated role that signs applications (internal/tuf.AppsRole).
const appsRole = "apps"

// Bundle is the signed TUF metadata a slot is verified with, as the update client trusted
// it when it planned the image (update.Client.Bundle): the root chain after the pinned
// root, targets.json and, for apps, apps.json. Every field holds the files' raw bytes.
// update.Bundle has the same fields, so one converts to the other.
type Bundle struct {
	// Roots are 2.root.json ... N.root.json: every root after the pinned one, in order.
	Roots [][]byte
	// Targets is targets.json, signed by the platform OS key the last root names.
	Targets []byte
	// Apps is apps.json, signed by the tenant keys targets.json delegates "apps" to; nil
	// when the client has none (an OS bundle does not need it).
	Apps []byte
}

// bundleFile is a slot's bundle.json: the bundle and the target path of the slot's image.
// The metadata is base64, so its bytes are kept exactly.
type bundleFile struct {
	Format  int      `json:"format"`
	Path    string   `json:"path"`
	Roots   [][]byte `json:"roots"`
	Targets []byte   `json:"targets"`
	Apps    []byte   `json:"apps,omitempty"`
}

// parseBundle decodes bundle.json strictly: unknown fields, trailing data and missing
// fields are ErrMalformedBundle.
func parseBundle(b []byte) (bundleFile, error) {
	if len(b) > MaxBundleBytes {
		return bundleFile{}, fmt.Errorf("%w: more than %d bytes", ErrMalformedBundle, MaxBundleBytes)
	}
	var bf bundleFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&bf); err != nil {
		return bundleFile{}, fmt.Errorf("%w: %w", ErrMalformedBundle, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bundleFile{}, fmt.Errorf("%w: trailing data", ErrMalformedBundle)
	}
	var errs []error
	if bf.Format != BundleFormat {
		errs = append(errs, fmt.Errorf("format: %d, want %d", bf.Format, BundleFormat))
	}
	if bf.Path == "" {
		errs = append(errs, errors.New("path: required"))
	}
	if len(bf.Roots) > MaxRoots {
		errs = append(errs, fmt.Errorf("roots: more than %d", MaxRoots))
	}
	if len(bf.Targets) == 0 {
		errs = append(errs, errors.New("targets: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return bundleFile{}, fmt.Errorf("%w: %w", ErrMalformedBundle, err)
	}
	return bf, nil
}

// encodeBundle is bundle.json for b and the target path p.
func encodeBundle(p string, b Bundle) ([]byte, error) {
	roots := b.Roots
	if roots == nil {
		roots = [][]byte{}
	}
	out, err := json.Marshal(bundleFile{Format: BundleFormat, Path: p, Roots: roots, Targets: b.Targets, Apps: b.Apps})
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Verified is what Verify found in a slot.
type Verified struct {
	// Image describes the slot's image, with the versions of its bundle's metadata.
	Image    Installed
	Manifest image.Manifest
}

// signedTarget is the target a bundle signs at a path.
type signedTarget struct {
	path            string
	sha256          string
	length          int64
	securityVersion uint32
}

// Verify checks that the slot at slotDir holds an image of kind that the offline keys
// signed, from pinnedRoot down (verified boot; DESIGN rule 2 and 4):
//
//   - bundle.json's roots chain from pinnedRoot, each one version after the last and signed
//     by a threshold of the previous root's root keys and of its own;
//   - targets.json is signed by a threshold of the last root's targets keys; for an app,
//     apps.json by a threshold of the keys targets.json delegates "apps" to, and the path
//     is one that delegation covers;
//   - image.pkg has the SHA-256 and length of the target at the slot's path, and the signed
//     custom security_version;
//   - the package's manifest names that kind, name, version and security version;
//   - root/ holds exactly the package's payload: the same files with the same content and
//     executable bits, nothing more;
//   - nothing differs from want, the record's description of the slot, where want says
//     something: the path, the SHA-256, the version, the security version, and no metadata
//     version below want.Metadata (a rolled-back bundle).
//
// Expiry is not checked: a device must boot offline for years after its metadata expired.
// Freshness is the update client's job, when it installs.
//
// Errors wrap ErrMalformedBundle, ErrNotSigned, ErrRollback, ErrHashMismatch, ErrWrongImage,
// ErrTreeMismatch or the image package's errors.
func Verify(pinnedRoot []byte, slotDir string, kind image.Kind, want Installed, maxPayloadBytes int64) (Verified, error) {
	raw, err := readBounded(filepath.Join(slotDir, bundleName), MaxBundleBytes)
	if err != nil {
		return Verified{}, fmt.Errorf("%w: %w", ErrMalformedBundle, err)
	}
	tgt, vers, err := verifyBundle(pinnedRoot, raw, kind, want)
	if err != nil {
		return Verified{}, err
	}
	m, err := verifyPackage(slotDir, kind, tgt, want, maxPayloadBytes)
	if err != nil {
		return Verified{}, err
	}
	return Verified{Manifest: m, Image: Installed{
		Path: tgt.path, SHA256: tgt.sha256, Version: m.Version, SecurityVersion: m.SecurityVersion, Metadata: vers,
	}}, nil
}

// verifyBundle checks bundle.json's metadata from pinnedRoot and returns the target it signs
// at the slot's path, and the versions of its metadata.
func verifyBundle(pinnedRoot, raw []byte, kind image.Kind, want Installed) (signedTarget, Versions, error) {
	bf, err := parseBundle(raw)
	if err != nil {
		return signedTarget{}, Versions{}, err
	}
	if want.Path != "" && bf.Path != want.Path {
		return signedTarget{}, Versions{}, fmt.Errorf("%w: bundle is for %s, the slot holds %s", ErrWrongImage, bf.Path, want.Path)
	}
	if _, _, err := splitPath(bf.Path, kind); err != nil {
		return signedTarget{}, Versions{}, fmt.Errorf("%w: %w", ErrMalformedBundle, err)
	}
	root, err := parseRoot(pinnedRoot)
	if err != nil {
		return signedTarget{}, Versions{}, fmt.Errorf("pinned root: %w", err)
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return signedTarget{}, Versions{}, fmt.Errorf("%w: pinned root is not signed by its own root keys: %w", ErrNotSigned, err)
	}
	for i, b := range bf.Roots {
		next, err := parseRoot(b)
		if err != nil {
			return signedTarget{}, Versions{}, fmt.Errorf("%w: roots[%d]: %w", ErrMalformedBundle, i, err)
		}
		if next.Signed.Version != root.Signed.Version+1 {
			return signedTarget{}, Versions{}, fmt.Errorf("%w: roots[%d] is version %d, want %d", ErrNotSigned, i, next.Signed.Version, root.Signed.Version+1)
		}
		if err := root.VerifyDelegate(metadata.ROOT, next); err != nil {
			return signedTarget{}, Versions{}, fmt.Errorf("%w: root version %d by the keys of version %d: %w", ErrNotSigned, next.Signed.Version, root.Signed.Version, err)
		}
		if err := next.VerifyDelegate(metadata.ROOT, next); err != nil {
			return signedTarget{}, Versions{}, fmt.Errorf("%w: root version %d by its own keys: %w", ErrNotSigned, next.Signed.Version, err)
		}
		root = next
	}
	targets, err := parseTargets(bf.Targets)
	if err != nil {
		return signedTarget{}, Versions{}, fmt.Errorf("%w: targets: %w", ErrMalformedBundle, err)
	}
	if err := root.VerifyDelegate(metadata.TARGETS, targets); err != nil {
		return signedTarget{}, Versions{}, fmt.Errorf("%w: targets version %d by the targets keys of root version %d: %w",
			ErrNotSigned, targets.Signed.Version, root.Signed.Version, err)
	}
	vers := Versions{Root: root.Signed.Version, Targets: targets.Signed.Version}
	var tf *metadata.TargetFiles
	if kind == image.KindOS {
		tf = targets.Signed.Targets[bf.Path]
	} else {
		tf, vers.Apps, err = appTarget(targets, bf)
		if err != nil {
			return signedTarget{}, Versions{}, err
		}
	}
	if vers.below(want.Metadata) {
		return signedTarget{}, Versions{}, fmt.Errorf("%w: bundle has root %d, targets %d, apps %d; the slot was installed with %d, %d, %d",
			ErrRollback, vers.Root, vers.Targets, vers.Apps, want.Metadata.Root, want.Metadata.Targets, want.Metadata.Apps)
	}
	if tf == nil {
		return signedTarget{}, Versions{}, fmt.Errorf("%w: no target %s in the signed metadata", ErrNotSigned, bf.Path)
	}
	tgt, err := targetOf(bf.Path, tf)
	if err != nil {
		return signedTarget{}, Versions{}, err
	}
	return tgt, vers, nil
}

// appTarget verifies apps.json against the delegation in targets and returns its target at
// the bundle's path and its version. The path must be one the delegation covers, and
// targets.json itself must not list it: an app is signed by the tenant key alone.
func appTarget(targets *metadata.Metadata[metadata.TargetsType], bf bundleFile) (*metadata.TargetFiles, int64, error) {
	if _, ok := targets.Signed.Targets[bf.Path]; ok {
		return nil, 0, fmt.Errorf("%w: targets.json lists app %s itself; apps are signed by the tenant's key", ErrNotSigned, bf.Path)
	}
	d := targets.Signed.Delegations
	if d == nil || d.SuccinctRoles != nil {
		return nil, 0, fmt.Errorf("%w: targets.json delegates no role %q", ErrNotSigned, appsRole)
	}
	var role *metadata.DelegatedRole
	for i := range d.Roles {
		if d.Roles[i].Name == appsRole {
			role = &d.Roles[i]
			break
		}
	}
	if role == nil {
		return nil, 0, fmt.Errorf("%w: targets.json delegates no role %q", ErrNotSigned, appsRole)
	}
	if ok, err := role.IsDelegatedPath(bf.Path); err != nil || !ok {
		return nil, 0, fmt.Errorf("%w: role %q is not delegated the path %s", ErrNotSigned, appsRole, bf.Path)
	}
	if len(bf.Apps) == 0 {
		return nil, 0, fmt.Errorf("%w: the bundle has no apps.json", ErrNotSigned)
	}
	apps, err := parseTargets(bf.Apps)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: apps: %w", ErrMalformedBundle, err)
	}
	if err := targets.VerifyDelegate(appsRole, apps); err != nil {
		return nil, 0, fmt.Errorf("%w: apps version %d by the keys targets version %d delegates: %w",
			ErrNotSigned, apps.Signed.Version, targets.Signed.Version, err)
	}
	return apps.Signed.Targets[bf.Path], apps.Signed.Version, nil
}

// targetOf reads the SHA-256, length and custom security_version of a signed target.
func targetOf(p string, tf *metadata.TargetFiles) (signedTarget, error) {
	sum, ok := tf.Hashes["sha256"]
	if !ok || len(sum) != sha256.Size {
		return signedTarget{}, fmt.Errorf("%w: target %s has no sha256", ErrNotSigned, p)
	}
	if tf.Length < 0 {
		return signedTarget{}, fmt.Errorf("%w: target %s has a negative length", ErrNotSigned, p)
	}
	// The same strict reader as the server's catalog and the update client
	// (target.DecodeCustom). Attacked by TestVerify_RejectsBadCustomMetadata.
	var raw []byte
	if tf.Custom != nil {
		raw = *tf.Custom
	}
	custom, err := target.DecodeCustom(p, raw)
	if err != nil {
		return signedTarget{}, fmt.Errorf("%w: %w", ErrNotSigned, err)
	}
	return signedTarget{path: p, sha256: hex.EncodeToString(sum), length: tf.Length, securityVersion: custom.SecurityVersion}, nil
}

// verifyPackage checks the slot's image.pkg against the signed target and want, then its
// manifest, then root/ against its payload.
func verifyPackage(slotDir string, kind image.Kind, tgt signedTarget, want Installed, maxPayloadBytes int64) (image.Manifest, error) {
	f, err := os.Open(filepath.Join(slotDir, packageName))
	if err != nil {
		return image.Manifest{}, fmt.Errorf("%w: %w", ErrHashMismatch, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return image.Manifest{}, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != tgt.length {
		return image.Manifest{}, fmt.Errorf("%w: %s is %d bytes, the signed target %s %d",
			ErrHashMismatch, packageName, fi.Size(), tgt.path, tgt.length)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, tgt.length)); err != nil {
		return image.Manifest{}, fmt.Errorf("read %s: %w", packageName, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != tgt.sha256 {
		return image.Manifest{}, fmt.Errorf("%w: %s has SHA-256 %s, the signed target %s %s",
			ErrHashMismatch, packageName, got, tgt.path, tgt.sha256)
	}
	if want.SHA256 != "" && want.SHA256 != tgt.sha256 {
		return image.Manifest{}, fmt.Errorf("%w: %s has SHA-256 %s, the slot was installed with %s",
			ErrHashMismatch, packageName, tgt.sha256, want.SHA256)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return image.Manifest{}, err
	}
	r, err := image.Open(io.LimitReader(f, tgt.length))
	if err != nil {
		return image.Manifest{}, fmt.Errorf("%w: %w", ErrWrongImage, err)
	}
	m := r.Manifest()
	name, version, _ := splitPath(tgt.path, kind) // checked by verifyBundle
	if m.Kind != kind || m.Name != name || m.Version != version || m.SecurityVersion != tgt.securityVersion {
		return image.Manifest{}, fmt.Errorf("%w: package holds %s %s %s security version %d, signed as %s security version %d",
			ErrWrongImage, m.Kind, m.Name, m.Version, m.SecurityVersion, tgt.path, tgt.securityVersion)
	}
	if want.Path != "" && (want.Version != m.Version || want.SecurityVersion != m.SecurityVersion) {
		return image.Manifest{}, fmt.Errorf("%w: package holds version %s security version %d, the slot was installed with %s security version %d",
			ErrWrongImage, m.Version, m.SecurityVersion, want.Version, want.SecurityVersion)
	}
	if err := verifyTree(r.Payload(), filepath.Join(slotDir, rootName), maxPayloadBytes); err != nil {
		return image.Manifest{}, err
	}
	return m, nil
}

// parseRoot and parseTargets decode metadata with go-tuf, turning a panic in its decoders
// into an error: bytes from disk must never stop the launcher (rule 5).
func parseRoot(b []byte) (r *metadata.Metadata[metadata.RootType], err error) {
	defer recoverMalformed(&err)
	return metadata.Root().FromBytes(b)
}

func parseTargets(b []byte) (t *metadata.Metadata[metadata.TargetsType], err error) {
	defer recoverMalformed(&err)
	return metadata.Targets().FromBytes(b)
}

func recoverMalformed(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("malformed metadata: %v", p)
	}
}

// readBounded reads a whole file of at most limit bytes.
func readBounded(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes", filepath.Base(name), limit)
	}
	return b, nil
}
