package tuf

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// AppsRole is the name of the delegated role the tenant's image signing keys hold.
const AppsRole = "apps"

// AppsPaths are the path patterns of the "apps" delegation: apps/{component}/{version}.
// TUF patterns match one path segment per "*" (go-tuf splits on "/"), so "apps/*" alone
// would not cover the two-segment names the design uses.
var AppsPaths = []string{"apps/*/*"}

const (
	appsPrefix = "apps/"
	osPrefix   = "os/"
	maxPath    = 512
	maxSegment = 128
)

// Errors callers branch on; every error of this package that stands for one wraps it.
var (
	// ErrSignature: metadata is not signed by a threshold of the keys trusted for its role.
	ErrSignature = errors.New("not signed by a threshold of the role's trusted keys")
	// ErrVersion: a version that is not the next one (root) or not above the current one.
	ErrVersion = errors.New("metadata version does not advance")
	// ErrNotFound: no such file in the view, or nothing published yet.
	ErrNotFound = errors.New("not found")
	// ErrExpired: metadata that would be served has expired.
	ErrExpired = errors.New("metadata expired")
	// ErrPath: a target path outside its role's namespace or not in canonical form.
	ErrPath = errors.New("target path not allowed")
	// ErrMalformed: bytes that are not metadata of the expected role and shape.
	ErrMalformed = errors.New("malformed metadata")
)

type (
	rootMeta      = metadata.Metadata[metadata.RootType]
	targetsMeta   = metadata.Metadata[metadata.TargetsType]
	snapshotMeta  = metadata.Metadata[metadata.SnapshotType]
	timestampMeta = metadata.Metadata[metadata.TimestampType]
)

// View is one tenant's view of the image repository: the platform root chain, the tenant's
// top-level targets, its apps role, and the snapshot and timestamp the server signs over
// them, with every version a client may still ask for. A View is safe for concurrent use.
type View struct {
	mu sync.RWMutex

	root  *rootMeta
	roots [][]byte // roots[i] is version i+1

	targets     *targetsMeta
	targetsHist map[int64][]byte
	apps        *targetsMeta
	appsHist    map[int64][]byte

	snapshot     *snapshotMeta
	snapshotHist map[int64][]byte
	timestamp    *timestampMeta
	timestampRaw []byte
	snapshotTTL  time.Duration
}

// Open starts a view from 1.root.json, which must be signed by a threshold of its own root
// keys.
func Open(rootJSON []byte) (*View, error) {
	r, err := parseRoot(rootJSON)
	if err != nil {
		return nil, err
	}
	if r.Signed.Version != 1 {
		return nil, fmt.Errorf("%w: first root is version %d, want 1", ErrVersion, r.Signed.Version)
	}
	if err := r.VerifyDelegate(metadata.ROOT, r); err != nil {
		return nil, fmt.Errorf("%w: root version 1: %w", ErrSignature, err)
	}
	return &View{
		root:         r,
		roots:        [][]byte{bytes.Clone(rootJSON)},
		targetsHist:  map[int64][]byte{},
		appsHist:     map[int64][]byte{},
		snapshotHist: map[int64][]byte{},
	}, nil
}

// PutRoot rotates the root: next must be version current+1 and signed by a threshold of the
// current root's root keys and by a threshold of its own. Enforces rule 2; attacked by
// TestTUF_RootRotation.
func (v *View) PutRoot(next []byte) error {
	r, err := parseRoot(next)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if want := v.root.Signed.Version + 1; r.Signed.Version != want {
		return fmt.Errorf("%w: root version %d, want %d", ErrVersion, r.Signed.Version, want)
	}
	if err := v.root.VerifyDelegate(metadata.ROOT, r); err != nil {
		return fmt.Errorf("%w: root version %d by the keys of version %d: %w", ErrSignature, r.Signed.Version, v.root.Signed.Version, err)
	}
	if err := r.VerifyDelegate(metadata.ROOT, r); err != nil {
		return fmt.Errorf("%w: root version %d by its own keys: %w", ErrSignature, r.Signed.Version, err)
	}
	v.root = r
	v.roots = append(v.roots, bytes.Clone(next))
	return nil
}

// PutTargets stores a new top-level targets.json: signed by the root's targets keys (the
// platform OS key), a version above the current one, targets only under "os/", and exactly
// the terminating "apps" delegation of AppsPaths. A delegation to new tenant keys makes the
// current apps.json untrusted on clients until the tenant signs a new one (key rotation and
// revocation). Enforces rules 2 and 5; attacked by TestTUF_RejectsArbitrarySoftware and
// TestTUF_TenantKeyRotation.
func (v *View) PutTargets(data []byte) error {
	t, err := parseTargets(data)
	if err != nil {
		return err
	}
	if err := checkTargetFiles(t, osPrefix, nil); err != nil {
		return err
	}
	if err := checkDelegation(t); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.root.VerifyDelegate(metadata.TARGETS, t); err != nil {
		return fmt.Errorf("%w: targets version %d: %w", ErrSignature, t.Signed.Version, err)
	}
	if err := advances("targets", v.targets, t); err != nil {
		return err
	}
	v.targets = t
	v.targetsHist[t.Signed.Version] = bytes.Clone(data)
	return nil
}

// PutApps stores a new apps.json: signed by a threshold of the keys the current targets
// delegates "apps" to, a version above the current one, no further delegation, and every
// target path canonical and under AppsPaths. Enforces rules 2 and 5; attacked by
// TestTUF_RejectsArbitrarySoftware, TestTUF_RejectsPathTraversal and FuzzPutApps.
func (v *View) PutApps(data []byte) error {
	a, err := parseTargets(data)
	if err != nil {
		return err
	}
	if a.Signed.Delegations != nil {
		return fmt.Errorf("%w: apps delegates further", ErrMalformed)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.targets == nil {
		return fmt.Errorf("%w: no targets delegates apps yet", ErrSignature)
	}
	if err := v.targets.VerifyDelegate(AppsRole, a); err != nil {
		return fmt.Errorf("%w: apps version %d: %w", ErrSignature, a.Signed.Version, err)
	}
	if err := checkTargetFiles(a, appsPrefix, &v.targets.Signed.Delegations.Roles[0]); err != nil {
		return err
	}
	if err := advances("apps", v.apps, a); err != nil {
		return err
	}
	v.apps = a
	v.appsHist[a.Signed.Version] = bytes.Clone(data)
	return nil
}

// Publish signs a new snapshot (the versions, lengths and hashes of targets.json and
// apps.json) and a new timestamp (that of the snapshot) with the online key. It refuses to
// publish expired root, targets or apps metadata (ErrExpired) and checks that the online
// key is the one the root names (ErrSignature). On error the view is unchanged.
func (v *View) Publish(online signature.Signer, now time.Time, snapshotTTL, timestampTTL time.Duration) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.publish(online, now, snapshotTTL, timestampTTL)
}

func (v *View) publish(online signature.Signer, now time.Time, snapshotTTL, timestampTTL time.Duration) error {
	if snapshotTTL <= 0 || timestampTTL <= 0 {
		return fmt.Errorf("%w: non-positive TTL", ErrExpired)
	}
	if v.targets == nil {
		return fmt.Errorf("%w: no targets to publish", ErrNotFound)
	}
	if v.root.Signed.IsExpired(now) {
		return fmt.Errorf("%w: root version %d expired at %s", ErrExpired, v.root.Signed.Version, v.root.Signed.Expires)
	}
	if v.targets.Signed.IsExpired(now) {
		return fmt.Errorf("%w: targets version %d expired at %s", ErrExpired, v.targets.Signed.Version, v.targets.Signed.Expires)
	}
	if v.apps != nil && v.apps.Signed.IsExpired(now) {
		return fmt.Errorf("%w: apps version %d expired at %s", ErrExpired, v.apps.Signed.Version, v.apps.Signed.Expires)
	}
	// The current targets must verify under the current root: after a rotation of the OS
	// key, nothing is published until targets signed by the new key arrives.
	if err := v.root.VerifyDelegate(metadata.TARGETS, v.targets); err != nil {
		return fmt.Errorf("%w: targets version %d under root version %d: %w", ErrSignature, v.targets.Signed.Version, v.root.Signed.Version, err)
	}

	s := metadata.Snapshot(expiry(now.Add(snapshotTTL)))
	s.Signed.Version = 1
	if v.snapshot != nil {
		s.Signed.Version = v.snapshot.Signed.Version + 1
	}
	s.Signed.Meta = map[string]*metadata.MetaFiles{
		"targets.json": metaFile(v.targets.Signed.Version, v.targetsHist[v.targets.Signed.Version]),
	}
	if v.apps != nil {
		s.Signed.Meta[AppsRole+".json"] = metaFile(v.apps.Signed.Version, v.appsHist[v.apps.Signed.Version])
	}
	if _, err := s.Sign(online); err != nil {
		return fmt.Errorf("sign snapshot: %w", err)
	}
	if err := v.root.VerifyDelegate(metadata.SNAPSHOT, s); err != nil {
		return fmt.Errorf("%w: online key is not the root's snapshot key: %w", ErrSignature, err)
	}
	sRaw, err := s.ToBytes(false)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	ts, tsRaw, err := v.signTimestamp(online, now, timestampTTL, metaFile(s.Signed.Version, sRaw))
	if err != nil {
		return err
	}
	v.snapshot = s
	v.snapshotHist[s.Signed.Version] = sRaw
	v.timestamp, v.timestampRaw = ts, tsRaw
	v.snapshotTTL = snapshotTTL
	return nil
}

func (v *View) signTimestamp(online signature.Signer, now time.Time, ttl time.Duration, snap *metadata.MetaFiles) (*timestampMeta, []byte, error) {
	ts := metadata.Timestamp(expiry(now.Add(ttl)))
	ts.Signed.Version = 1
	if v.timestamp != nil {
		ts.Signed.Version = v.timestamp.Signed.Version + 1
	}
	ts.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": snap}
	if _, err := ts.Sign(online); err != nil {
		return nil, nil, fmt.Errorf("sign timestamp: %w", err)
	}
	if err := v.root.VerifyDelegate(metadata.TIMESTAMP, ts); err != nil {
		return nil, nil, fmt.Errorf("%w: online key is not the root's timestamp key: %w", ErrSignature, err)
	}
	raw, err := ts.ToBytes(false)
	if err != nil {
		return nil, nil, fmt.Errorf("encode timestamp: %w", err)
	}
	return ts, raw, nil
}

// RefreshTimestamp re-signs the timestamp with the next version and expiry now+ttl when
// less than half of ttl is left of the current one; it does nothing otherwise. When the
// snapshot would expire before the new timestamp, it publishes a new snapshot too (with the
// snapshot TTL of the last Publish). Clients otherwise stop at a frozen repository (rule 2,
// freeze; TestTUF_RejectsFreeze).
func (v *View) RefreshTimestamp(online signature.Signer, now time.Time, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%w: non-positive TTL", ErrExpired)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.timestamp == nil {
		return fmt.Errorf("%w: nothing published yet", ErrNotFound)
	}
	if v.timestamp.Signed.Expires.Sub(now) > ttl/2 {
		return nil
	}
	if v.snapshot.Signed.Expires.Before(now.Add(ttl)) {
		if v.snapshotTTL <= 0 {
			return fmt.Errorf("%w: snapshot TTL unknown since Restore: Publish first", ErrExpired)
		}
		return v.publish(online, now, v.snapshotTTL, ttl)
	}
	snap := v.timestamp.Signed.Meta["snapshot.json"]
	ts, raw, err := v.signTimestamp(online, now, ttl, snap)
	if err != nil {
		return err
	}
	v.timestamp, v.timestampRaw = ts, raw
	return nil
}

// File returns a copy of the named metadata file as a TUF client asks for it with
// consistent snapshots: "N.root.json", "N.targets.json", "N.apps.json",
// "N.snapshot.json" and "timestamp.json". Anything else is ErrNotFound.
func (v *View) File(name string) ([]byte, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	role, n, ok := parseName(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	var data []byte
	switch role {
	case metadata.TIMESTAMP:
		data = v.timestampRaw
	case metadata.ROOT:
		if n <= int64(len(v.roots)) {
			data = v.roots[n-1]
		}
	case metadata.TARGETS:
		data = v.targetsHist[n]
	case AppsRole:
		data = v.appsHist[n]
	case metadata.SNAPSHOT:
		data = v.snapshotHist[n]
	}
	if data == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return bytes.Clone(data), nil
}

// parseName splits a served file name: "timestamp.json" is (timestamp, 0); "N.role.json"
// is (role, N) for the roles root, targets, apps and snapshot, N canonical and at least 1.
func parseName(name string) (role string, n int64, ok bool) {
	if name == "timestamp.json" {
		return metadata.TIMESTAMP, 0, true
	}
	base, ok := strings.CutSuffix(name, ".json")
	num, role, ok2 := strings.Cut(base, ".")
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || !ok2 || err != nil || n < 1 || num != strconv.FormatInt(n, 10) {
		return "", 0, false
	}
	switch role {
	case metadata.ROOT, metadata.TARGETS, AppsRole, metadata.SNAPSHOT:
		return role, n, true
	}
	return "", 0, false
}

// fileName is the consistent-snapshot name of version n of role.
func fileName(n int64, role string) string { return strconv.FormatInt(n, 10) + "." + role + ".json" }

func metaFile(version int64, raw []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(raw)
	return &metadata.MetaFiles{Version: version, Length: int64(len(raw)), Hashes: metadata.Hashes{"sha256": sum[:]}}
}

func advances(role string, cur, next *targetsMeta) error {
	if cur != nil && next.Signed.Version <= cur.Signed.Version {
		return fmt.Errorf("%w: %s version %d, current %d", ErrVersion, role, next.Signed.Version, cur.Signed.Version)
	}
	if next.Signed.Version < 1 {
		return fmt.Errorf("%w: %s version %d", ErrVersion, role, next.Signed.Version)
	}
	return nil
}

func parseRoot(data []byte) (r *rootMeta, err error) {
	defer recoverMalformed(&err)
	r, err = metadata.Root().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w: root: %w", ErrMalformed, err)
	}
	if !r.Signed.ConsistentSnapshot {
		return nil, fmt.Errorf("%w: root without consistent snapshots", ErrMalformed)
	}
	for _, role := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if rr := r.Signed.Roles[role]; rr == nil || rr.Threshold < 1 || len(rr.KeyIDs) < rr.Threshold {
			return nil, fmt.Errorf("%w: root role %s without a threshold of keys", ErrMalformed, role)
		}
	}
	return r, nil
}

func parseTargets(data []byte) (t *targetsMeta, err error) {
	defer recoverMalformed(&err)
	t, err = metadata.Targets().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w: targets: %w", ErrMalformed, err)
	}
	return t, nil
}

// recoverMalformed turns a panic inside go-tuf's decoders into ErrMalformed: bytes from
// outside must never take the server down (rule 5).
func recoverMalformed(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("%w: %v", ErrMalformed, p)
	}
}

// checkDelegation requires exactly the delegation moat uses: one terminating role "apps"
// over AppsPaths, threshold at least 1, every key ECDSA P-256.
func checkDelegation(t *targetsMeta) error {
	d := t.Signed.Delegations
	if d == nil || d.SuccinctRoles != nil || len(d.Roles) != 1 {
		return fmt.Errorf("%w: targets must delegate exactly the role %q", ErrMalformed, AppsRole)
	}
	r := d.Roles[0]
	if r.Name != AppsRole || !r.Terminating || r.Threshold < 1 || len(r.KeyIDs) < r.Threshold {
		return fmt.Errorf("%w: delegation %q must be terminating with a threshold of keys", ErrMalformed, r.Name)
	}
	if !slices.Equal(r.Paths, AppsPaths) || len(r.PathHashPrefixes) != 0 {
		return fmt.Errorf("%w: delegation paths %q, want %q", ErrPath, r.Paths, AppsPaths)
	}
	for _, id := range r.KeyIDs {
		k, ok := d.Keys[id]
		if !ok {
			return fmt.Errorf("%w: delegated key %s missing", ErrMalformed, id)
		}
		pub, err := k.ToPublicKey()
		if err != nil {
			return fmt.Errorf("%w: delegated key %s: %w", ErrMalformed, id, err)
		}
		if ec, ok := pub.(*ecdsa.PublicKey); !ok || ec.Curve != elliptic.P256() || k.Scheme != metadata.KeySchemeECDSA_SHA2_P256 {
			return fmt.Errorf("%w: delegated key %s is not ECDSA P-256", ErrMalformed, id)
		}
	}
	return nil
}

// checkTargetFiles requires every target of t to have a canonical path under prefix (and
// within role's paths, if given), a SHA-256 hash and a non-negative length.
func checkTargetFiles(t *targetsMeta, prefix string, role *metadata.DelegatedRole) error {
	for name, f := range t.Signed.Targets {
		if err := checkPath(name, prefix, role); err != nil {
			return err
		}
		if f == nil || f.Length < 0 || len(f.Hashes["sha256"]) != sha256.Size {
			return fmt.Errorf("%w: target %q needs a length and a sha256 hash", ErrMalformed, name)
		}
	}
	return nil
}

// checkPath accepts only canonical relative paths under prefix whose segments are 1 to 128
// of [A-Za-z0-9._+~-], not "." or "..": nothing a client could resolve outside its target
// directory (python-tuf CVE-2021-41131), and within role's paths if role is not nil.
// Attacked by TestTUF_RejectsPathTraversal and FuzzPutApps.
func checkPath(name, prefix string, role *metadata.DelegatedRole) error {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || len(name) > maxPath {
		return fmt.Errorf("%w: %q is not under %q", ErrPath, name, prefix)
	}
	for seg := range strings.SplitSeq(rest, "/") {
		if seg == "" || seg == "." || seg == ".." || len(seg) > maxSegment {
			return fmt.Errorf("%w: %q has an empty, dot or overlong segment", ErrPath, name)
		}
		for _, c := range []byte(seg) {
			if !pathByte(c) {
				return fmt.Errorf("%w: %q has the byte %q", ErrPath, name, c)
			}
		}
	}
	if role != nil {
		if ok, err := role.IsDelegatedPath(name); err != nil || !ok {
			return fmt.Errorf("%w: %q is outside the paths %q delegated to %s", ErrPath, name, role.Paths, role.Name)
		}
	}
	return nil
}

func pathByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._+~-", c) >= 0
}
