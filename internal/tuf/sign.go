package tuf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
)

// TargetFile describes one target (an image blob) as a targets role lists it.
type TargetFile struct {
	Length int64         // bytes
	SHA256 string        // lower-case hex
	Custom target.Custom // the signed custom metadata (kind, version, security version, ...)
}

// RootKeys are the public keys a root.json names, with the root role's threshold. Every
// other top-level role has threshold 1.
type RootKeys struct {
	Root          []*ecdsa.PublicKey // platform root keys (offline)
	RootThreshold int
	OS            *ecdsa.PublicKey // top-level targets: platform OS key (offline)
	Online        *ecdsa.PublicKey // snapshot and timestamp: server key (online)
}

// NewRoot builds and signs 1.root.json: consistent snapshots; the root role held by rootPub,
// targets by osPub, snapshot and timestamp by onlinePub, each with threshold 1. It runs
// where the platform root key is (offline).
func NewRoot(rootSigner signature.Signer, rootPub, osPub, onlinePub *ecdsa.PublicKey, expires time.Time) ([]byte, error) {
	return SignRoot([]signature.Signer{rootSigner}, 1, expires, RootKeys{
		Root: []*ecdsa.PublicKey{rootPub}, RootThreshold: 1, OS: osPub, Online: onlinePub,
	})
}

// SignRoot builds root.json version with k and signs it with every signer. For a rotation
// (version > 1) signers must hold a threshold of the previous root's root keys and a
// threshold of k.Root; SignRoot checks only the latter, View.PutRoot checks both.
func SignRoot(signers []signature.Signer, version int64, expires time.Time, k RootKeys) ([]byte, error) {
	if version < 1 {
		return nil, fmt.Errorf("%w: root version %d", ErrVersion, version)
	}
	if len(k.Root) == 0 || k.RootThreshold < 1 || k.RootThreshold > len(k.Root) {
		return nil, fmt.Errorf("%w: root threshold %d of %d keys", ErrMalformed, k.RootThreshold, len(k.Root))
	}
	r := metadata.Root(expiry(expires))
	r.Signed.Version = version
	r.Signed.ConsistentSnapshot = true
	add := func(pub *ecdsa.PublicKey, role string) error {
		key, err := tufKey(pub)
		if err != nil {
			return err
		}
		return r.Signed.AddKey(key, role)
	}
	for _, pub := range k.Root {
		if err := add(pub, metadata.ROOT); err != nil {
			return nil, err
		}
	}
	r.Signed.Roles[metadata.ROOT].Threshold = k.RootThreshold
	for role, pub := range map[string]*ecdsa.PublicKey{metadata.TARGETS: k.OS, metadata.SNAPSHOT: k.Online, metadata.TIMESTAMP: k.Online} {
		if err := add(pub, role); err != nil {
			return nil, err
		}
	}
	for _, s := range signers {
		if _, err := r.Sign(s); err != nil {
			return nil, fmt.Errorf("sign root: %w", err)
		}
	}
	if err := r.VerifyDelegate(metadata.ROOT, r); err != nil {
		return nil, fmt.Errorf("%w: root version %d is not signed by its own threshold: %w", ErrSignature, version, err)
	}
	return r.ToBytes(false)
}

// SignTargets builds and signs the top-level targets.json of a tenant view with the
// platform OS key: osTargets (paths under "os/") and the terminating delegation "apps" of
// the paths AppsPaths to appKeys with threshold 1. It runs where the OS key is (offline).
func SignTargets(osSigner signature.Signer, version int64, expires time.Time, osTargets map[string]TargetFile, appKeys []*ecdsa.PublicKey) ([]byte, error) {
	if version < 1 {
		return nil, fmt.Errorf("%w: targets version %d", ErrVersion, version)
	}
	if len(appKeys) == 0 {
		return nil, fmt.Errorf("%w: no tenant key to delegate apps to", ErrMalformed)
	}
	t := metadata.Targets(expiry(expires))
	t.Signed.Version = version
	if err := addTargets(t, osTargets, osPrefix, nil); err != nil {
		return nil, err
	}
	t.Signed.Delegations = &metadata.Delegations{
		Keys: map[string]*metadata.Key{},
		Roles: []metadata.DelegatedRole{{
			Name: AppsRole, KeyIDs: []string{}, Threshold: 1, Terminating: true, Paths: slices.Clone(AppsPaths),
		}},
	}
	for _, pub := range appKeys {
		key, err := tufKey(pub)
		if err != nil {
			return nil, err
		}
		if err := t.Signed.AddKey(key, AppsRole); err != nil {
			return nil, err
		}
	}
	return sign(t, osSigner)
}

// SignApps builds and signs the tenant's apps.json with the tenant's image signing key:
// targets, every path under "apps/" (AppsPaths). It runs where the tenant key is (offline).
func SignApps(tenantSigner signature.Signer, version int64, expires time.Time, targets map[string]TargetFile) ([]byte, error) {
	if version < 1 {
		return nil, fmt.Errorf("%w: apps version %d", ErrVersion, version)
	}
	t := metadata.Targets(expiry(expires))
	t.Signed.Version = version
	if err := addTargets(t, targets, appsPrefix, &metadata.DelegatedRole{Name: AppsRole, Paths: AppsPaths}); err != nil {
		return nil, err
	}
	return sign(t, tenantSigner)
}

func sign(t *metadata.Metadata[metadata.TargetsType], s signature.Signer) ([]byte, error) {
	if _, err := t.Sign(s); err != nil {
		return nil, fmt.Errorf("sign targets: %w", err)
	}
	return t.ToBytes(false)
}

func addTargets(t *metadata.Metadata[metadata.TargetsType], files map[string]TargetFile, prefix string, role *metadata.DelegatedRole) error {
	for _, name := range slices.Sorted(maps.Keys(files)) {
		f := files[name]
		if err := checkPath(name, prefix, role); err != nil {
			return err
		}
		sum, err := hex.DecodeString(f.SHA256)
		if err != nil || len(sum) != 32 {
			return fmt.Errorf("%w: target %q: sha256 %q is not 64 hex digits", ErrMalformed, name, f.SHA256)
		}
		if f.Length < 0 {
			return fmt.Errorf("%w: target %q: negative length", ErrMalformed, name)
		}
		tf := &metadata.TargetFiles{Length: f.Length, Hashes: metadata.Hashes{"sha256": sum}, Path: name}
		// Only what every reader accepts is signed (target.DecodeCustom reads it back).
		raw, err := f.Custom.Encode(name)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		tf.Custom = &raw
		t.Signed.Targets[name] = tf
	}
	return nil
}

func tufKey(pub *ecdsa.PublicKey) (*metadata.Key, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: delegated key", keys.ErrUnsupportedKey)
	}
	return metadata.KeyFromPublicKey(pub)
}

// expiry is t in UTC to the second, as TUF metadata writes it.
func expiry(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }
