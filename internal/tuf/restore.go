package tuf

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// File is one metadata file of a View under the name clients ask for it.
type File struct {
	Name string
	Data []byte
}

// Files returns a copy of every file the view serves: the roots, then targets, apps and
// snapshots, each by version, then timestamp.json. Every name but timestamp.json is
// immutable: once served, N.role.json keeps its bytes for the life of the view and of any
// view Restored from it. A server persists a view by storing each name it has not stored
// yet and overwriting timestamp.json, after every Put, Publish and RefreshTimestamp.
func (v *View) Files() []File {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]File, 0, len(v.roots)+len(v.targetsHist)+len(v.appsHist)+len(v.snapshotHist)+1)
	for i, raw := range v.roots {
		out = append(out, File{Name: fileName(int64(i+1), metadata.ROOT), Data: bytes.Clone(raw)})
	}
	for _, h := range []struct {
		role string
		hist map[int64][]byte
	}{{metadata.TARGETS, v.targetsHist}, {AppsRole, v.appsHist}, {metadata.SNAPSHOT, v.snapshotHist}} {
		for _, n := range slices.Sorted(maps.Keys(h.hist)) {
			out = append(out, File{Name: fileName(n, h.role), Data: bytes.Clone(h.hist[n])})
		}
	}
	if v.timestampRaw != nil {
		out = append(out, File{Name: "timestamp.json", Data: bytes.Clone(v.timestampRaw)})
	}
	return out
}

// Restore rebuilds a View from the files a View's Files returned, in any order, so that
// File serves the same bytes under every name. It trusts none of them: it verifies them
// as Open, the Put methods and Publish did, and as a client would.
//
//   - The roots are 1.root.json to N.root.json without a gap, 1 self-signed, each next one
//     signed by a threshold of the previous root's keys and of its own (ErrVersion for a
//     missing version, ErrSignature for a bad signature).
//   - Every N.targets.json holds version N, only "os/" targets and the "apps" delegation,
//     and is signed by the targets keys of some root of the chain; every N.apps.json holds
//     version N, no delegation and only AppsPaths targets, signed by the keys some stored
//     targets delegates "apps" to. "Some", not "the current", because a View legitimately
//     holds a current targets the current root no longer vouches for (after a rotation of
//     the OS key, until targets signed by the new key arrives; Publish refuses until then)
//     and a current apps the current targets no longer delegates to (after a tenant key
//     rotation, until the tenant re-signs; clients refuse it until then, as before the
//     restart). Restore keeps that state rather than invent another one.
//   - Snapshots are 1.snapshot.json to M.snapshot.json without a gap, each signed by the
//     snapshot keys of some root, listing targets.json (and apps.json) by a version that is
//     stored, with that file's exact length and SHA-256, versions never going down from
//     one snapshot to the next (mix-and-match and rollback within the stored set).
//   - timestamp.json is present exactly when a snapshot is, signed by the timestamp keys of
//     some root, names M.snapshot.json with its exact length and SHA-256, and has a version
//     of at least M.
//
// So Restore never accepts bytes that no key of the chain signed, nor a snapshot or
// timestamp that mixes files; what it cannot see is a file deleted together with every
// file that names it, or an older timestamp.json written over the newer one: the store
// must keep what it was given, and clients that saw newer versions still refuse older ones.
// Expiry is not checked: a server down for a while restores, then Publish re-signs.
// Unknown or duplicate names and bytes that do not parse are ErrMalformed; an empty list
// is ErrVersion (no 1.root.json).
//
// A restored View does not know the snapshot TTL of the last Publish: call Publish (the
// server does at start) before RefreshTimestamp needs a new snapshot, or it returns
// ErrExpired. Versions continue from the restored ones, so clients see no rollback.
func Restore(files []File) (*View, error) {
	byRole := map[string]map[int64][]byte{
		metadata.ROOT: {}, metadata.TARGETS: {}, AppsRole: {}, metadata.SNAPSHOT: {},
	}
	var tsRaw []byte
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if seen[f.Name] {
			return nil, fmt.Errorf("%w: restore: %q twice", ErrMalformed, f.Name)
		}
		seen[f.Name] = true
		role, n, ok := parseName(f.Name)
		if !ok {
			return nil, fmt.Errorf("%w: restore: unknown file name %q", ErrMalformed, f.Name)
		}
		if role == metadata.TIMESTAMP {
			tsRaw = bytes.Clone(f.Data)
			continue
		}
		byRole[role][n] = bytes.Clone(f.Data)
	}

	v, roots, err := restoreRoots(byRole[metadata.ROOT])
	if err != nil {
		return nil, err
	}
	targets, err := v.restoreTargets(roots, byRole[metadata.TARGETS])
	if err != nil {
		return nil, err
	}
	if err := v.restoreApps(targets, byRole[AppsRole]); err != nil {
		return nil, err
	}
	if err := v.restoreSnapshots(roots, byRole[metadata.SNAPSHOT]); err != nil {
		return nil, err
	}
	if err := v.restoreTimestamp(roots, tsRaw); err != nil {
		return nil, err
	}
	return v, nil
}

// restoreRoots replays the root chain through Open and PutRoot, so it is checked exactly
// as it was when the view took it.
func restoreRoots(files map[int64][]byte) (*View, []*rootMeta, error) {
	n := int64(len(files))
	for i := int64(1); i <= max(n, 1); i++ {
		if files[i] == nil {
			return nil, nil, fmt.Errorf("%w: restore: root chain has no %s", ErrVersion, fileName(i, metadata.ROOT))
		}
	}
	v, err := Open(files[1])
	if err != nil {
		return nil, nil, fmt.Errorf("restore %s: %w", fileName(1, metadata.ROOT), err)
	}
	roots := []*rootMeta{v.root}
	for i := int64(2); i <= n; i++ {
		if err := v.PutRoot(files[i]); err != nil {
			return nil, nil, fmt.Errorf("restore %s: %w", fileName(i, metadata.ROOT), err)
		}
		roots = append(roots, v.root)
	}
	return v, roots, nil
}

func (v *View) restoreTargets(roots []*rootMeta, files map[int64][]byte) ([]*targetsMeta, error) {
	var all []*targetsMeta
	for _, n := range slices.Sorted(maps.Keys(files)) {
		name := fileName(n, metadata.TARGETS)
		t, err := parseTargets(files[n])
		if err != nil {
			return nil, fmt.Errorf("restore %s: %w", name, err)
		}
		if t.Signed.Version != n {
			return nil, fmt.Errorf("%w: restore %s: holds version %d", ErrVersion, name, t.Signed.Version)
		}
		if err := checkTargetFiles(t, osPrefix, nil); err != nil {
			return nil, fmt.Errorf("restore %s: %w", name, err)
		}
		if err := checkDelegation(t); err != nil {
			return nil, fmt.Errorf("restore %s: %w", name, err)
		}
		if _, err := signedByAny(roots, metadata.TARGETS, t); err != nil {
			return nil, fmt.Errorf("%w: restore %s: by no root's targets keys: %w", ErrSignature, name, err)
		}
		v.targets = t
		v.targetsHist[n] = files[n]
		all = append(all, t)
	}
	return all, nil
}

func (v *View) restoreApps(targets []*targetsMeta, files map[int64][]byte) error {
	for _, n := range slices.Sorted(maps.Keys(files)) {
		name := fileName(n, AppsRole)
		a, err := parseTargets(files[n])
		if err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		if a.Signed.Version != n {
			return fmt.Errorf("%w: restore %s: holds version %d", ErrVersion, name, a.Signed.Version)
		}
		if a.Signed.Delegations != nil {
			return fmt.Errorf("%w: restore %s: apps delegates further", ErrMalformed, name)
		}
		by, err := signedByAny(targets, AppsRole, a)
		if err != nil {
			return fmt.Errorf("%w: restore %s: by no keys a stored targets delegates apps to: %w", ErrSignature, name, err)
		}
		if err := checkTargetFiles(a, appsPrefix, &by.Signed.Delegations.Roles[0]); err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		v.apps = a
		v.appsHist[n] = files[n]
	}
	return nil
}

func (v *View) restoreSnapshots(roots []*rootMeta, files map[int64][]byte) error {
	m := int64(len(files))
	var prev *snapshotMeta
	for n := int64(1); n <= m; n++ {
		name := fileName(n, metadata.SNAPSHOT)
		raw := files[n]
		if raw == nil {
			return fmt.Errorf("%w: restore: snapshots have no %s", ErrVersion, name)
		}
		s, err := parseSnapshot(raw)
		if err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		if s.Signed.Version != n {
			return fmt.Errorf("%w: restore %s: holds version %d", ErrVersion, name, s.Signed.Version)
		}
		if _, err := signedByAny(roots, metadata.SNAPSHOT, s); err != nil {
			return fmt.Errorf("%w: restore %s: by no root's snapshot keys: %w", ErrSignature, name, err)
		}
		if s.Signed.Meta["targets.json"] == nil {
			return fmt.Errorf("%w: restore %s: lists no targets.json", ErrMalformed, name)
		}
		for _, meta := range slices.Sorted(maps.Keys(s.Signed.Meta)) {
			var hist map[int64][]byte
			switch meta {
			case "targets.json":
				hist = v.targetsHist
			case AppsRole + ".json":
				hist = v.appsHist
			default:
				return fmt.Errorf("%w: restore %s: lists %q", ErrMalformed, name, meta)
			}
			mf := s.Signed.Meta[meta]
			if mf == nil {
				return fmt.Errorf("%w: restore %s: empty entry for %s", ErrMalformed, name, meta)
			}
			stored := hist[mf.Version]
			if stored == nil {
				return fmt.Errorf("%w: restore %s: names %s version %d, which is not stored", ErrVersion, name, meta, mf.Version)
			}
			if !sameMeta(mf, metaFile(mf.Version, stored)) {
				return fmt.Errorf("%w: restore %s: %s version %d has another length or hash than the stored one", ErrSignature, name, meta, mf.Version)
			}
			if prev != nil && prev.Signed.Meta[meta] != nil && mf.Version < prev.Signed.Meta[meta].Version {
				return fmt.Errorf("%w: restore %s: %s version %d below %d of the snapshot before", ErrVersion, name, meta, mf.Version, prev.Signed.Meta[meta].Version)
			}
		}
		if prev != nil && prev.Signed.Meta[AppsRole+".json"] != nil && s.Signed.Meta[AppsRole+".json"] == nil {
			return fmt.Errorf("%w: restore %s: lists no apps.json after a snapshot that did", ErrVersion, name)
		}
		v.snapshot = s
		v.snapshotHist[n] = raw
		prev = s
	}
	return nil
}

func (v *View) restoreTimestamp(roots []*rootMeta, raw []byte) error {
	if v.snapshot == nil {
		if raw != nil {
			return fmt.Errorf("%w: restore: timestamp.json without a snapshot", ErrMalformed)
		}
		return nil
	}
	if raw == nil {
		return fmt.Errorf("%w: restore: snapshots without timestamp.json", ErrMalformed)
	}
	ts, err := parseTimestamp(raw)
	if err != nil {
		return fmt.Errorf("restore timestamp.json: %w", err)
	}
	if _, err := signedByAny(roots, metadata.TIMESTAMP, ts); err != nil {
		return fmt.Errorf("%w: restore timestamp.json: by no root's timestamp keys: %w", ErrSignature, err)
	}
	mf := ts.Signed.Meta["snapshot.json"]
	if mf == nil || len(ts.Signed.Meta) != 1 {
		return fmt.Errorf("%w: restore timestamp.json: must list exactly snapshot.json", ErrMalformed)
	}
	latest := v.snapshot.Signed.Version
	if mf.Version != latest {
		return fmt.Errorf("%w: restore timestamp.json: names snapshot version %d, latest stored is %d", ErrVersion, mf.Version, latest)
	}
	if !sameMeta(mf, metaFile(latest, v.snapshotHist[latest])) {
		return fmt.Errorf("%w: restore timestamp.json: snapshot version %d has another length or hash than the stored one", ErrSignature, latest)
	}
	// Every Publish advances both versions and RefreshTimestamp only the timestamp's.
	if ts.Signed.Version < latest {
		return fmt.Errorf("%w: restore timestamp.json: version %d below snapshot version %d", ErrVersion, ts.Signed.Version, latest)
	}
	v.timestamp, v.timestampRaw = ts, raw
	return nil
}

// signedByAny returns the newest of signers under whose keys for role m verifies, or the
// error of the oldest.
func signedByAny[T metadata.Roles](signers []*metadata.Metadata[T], role string, m any) (*metadata.Metadata[T], error) {
	err := errors.New("no signer")
	for _, s := range slices.Backward(signers) {
		if err = s.VerifyDelegate(role, m); err == nil {
			return s, nil
		}
	}
	return nil, err
}

// sameMeta: got describes exactly what metaFile wrote for want (version, length, only a
// SHA-256).
func sameMeta(got, want *metadata.MetaFiles) bool {
	return got.Version == want.Version && got.Length == want.Length && len(got.Hashes) == 1 &&
		bytes.Equal(got.Hashes["sha256"], want.Hashes["sha256"])
}

func parseSnapshot(data []byte) (s *snapshotMeta, err error) {
	defer recoverMalformed(&err)
	s, err = metadata.Snapshot().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot: %w", ErrMalformed, err)
	}
	return s, nil
}

func parseTimestamp(data []byte) (ts *timestampMeta, err error) {
	defer recoverMalformed(&err)
	ts, err = metadata.Timestamp().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w: timestamp: %w", ErrMalformed, err)
	}
	return ts, nil
}
