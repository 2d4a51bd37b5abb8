package tuf

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func TestTUF_ClientInstallsAppAndOS(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	dir := t.TempDir()
	for path, want := range map[string]string{appPath: "dw100 app 1.0.0", osPath: "os image 1.0.0"} {
		got, err := r.install(dir, path)
		if err != nil || string(got) != want {
			t.Errorf("install(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	// A later app version reaches the same client.
	r.appsTargets["apps/dw100-app/1.1.0"] = r.addBlob("apps/dw100-app/1.1.0", []byte("dw100 app 1.1.0"))
	r.putApps()
	r.publish()
	if got, err := r.install(dir, "apps/dw100-app/1.1.0"); err != nil || string(got) != "dw100 app 1.1.0" {
		t.Errorf("install(1.1.0) = %q, %v", got, err)
	}
}

func TestView_File(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	for _, name := range []string{"1.root.json", "1.targets.json", "1.apps.json", "1.snapshot.json", "timestamp.json"} {
		if _, err := r.view.File(name); err != nil {
			t.Errorf("File(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"root.json", "2.root.json", "0.targets.json", "01.targets.json", "+1.targets.json", "1.timestamp.json",
		"targets.json", "1.other.json", "1.apps", "../1.root.json", "", "-1.snapshot.json", "99999999999999999999.root.json"} {
		if _, err := r.view.File(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("File(%q) = %v, want ErrNotFound", name, err)
		}
	}
	if !bytes.Equal(r.file("1.root.json"), r.root1) {
		t.Error("File(1.root.json) differs from the root the view was opened with")
	}
}

// TestTUF_RejectsArbitrarySoftware: apps.json signed by a key the targets role does not
// delegate to is refused by PutApps, and by a client even when a server holding the online
// key serves it with a matching snapshot (rule 2).
func TestTUF_RejectsArbitrarySoftware(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	evil := newKey(t)
	evilTargets := map[string]TargetFile{"apps/evil/1.0.0": r.addBlob("apps/evil/1.0.0", []byte("evil"))}
	evilApps := must(SignApps(signerOf(t, evil), 2, r.now.Add(year), evilTargets))(t)
	before := r.file("1.apps.json")
	if err := r.view.PutApps(evilApps); !errors.Is(err, ErrSignature) {
		t.Fatalf("PutApps(signed by unregistered key) = %v, want ErrSignature", err)
	}
	if _, err := r.view.File("2.apps.json"); !errors.Is(err, ErrNotFound) {
		t.Errorf("File(2.apps.json) after refused PutApps = %v, want ErrNotFound", err)
	}
	if !bytes.Equal(before, r.file("1.apps.json")) {
		t.Error("refused PutApps changed 1.apps.json")
	}
	// Targets signed by the online key instead of the OS key: refused too.
	evilOS := must(SignTargets(signerOf(t, r.onlineKey), 2, r.now.Add(year), nil, []*ecdsa.PublicKey{&evil.PublicKey}))(t)
	if err := r.view.PutTargets(evilOS); !errors.Is(err, ErrSignature) {
		t.Errorf("PutTargets(signed by online key) = %v, want ErrSignature", err)
	}

	// The compromised server serves the forged apps with a snapshot it signs itself.
	snap, ts := forge(t, r.onlineKey, 2, 2, r.now.Add(day), map[string][]byte{
		"targets.json": r.file("1.targets.json"), "apps.json": evilApps,
	})
	r.serveBytes("timestamp.json", ts)
	r.serveBytes("2.snapshot.json", snap)
	r.serveBytes("2.apps.json", evilApps)
	_, err := r.install(t.TempDir(), "apps/evil/1.0.0")
	if !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Errorf("client install of re-signed app = %v, want ErrUnsignedMetadata", err)
	}
}

// TestTUF_RejectsRollback: a client that saw version n refuses n-1 of timestamp, snapshot
// and targets, also after a restart from its cache, and its cache stays as it was (go-tuf
// CVE-2022-29173).
func TestTUF_RejectsRollback(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	oldTS, oldSnap, oldTargets, oldApps := r.file("timestamp.json"), r.file("1.snapshot.json"), r.file("1.targets.json"), r.file("1.apps.json")
	dir := t.TempDir()
	if _, err := r.install(dir, appPath); err != nil {
		t.Fatal(err)
	}
	r.putTargets()
	r.putApps()
	r.publish()
	if _, err := r.install(dir, appPath); err != nil {
		t.Fatal(err)
	}
	want := cache(t, dir)

	// Old timestamp (v1 after v2).
	r.serveBytes("timestamp.json", oldTS)
	if err := r.client(dir).Refresh(); !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
		t.Errorf("Refresh with timestamp v1 = %v, want ErrBadVersionNumber", err)
	}
	if diff := cmp.Diff(want, cache(t, dir)); diff != "" {
		t.Errorf("cache changed by refused timestamp rollback (-want +got):\n%s", diff)
	}

	// A newer timestamp naming the old snapshot (needs the online key).
	_, ts := forge(t, r.onlineKey, 1, 3, r.now.Add(day), map[string][]byte{"targets.json": oldTargets, "apps.json": oldApps})
	r.serveBytes("timestamp.json", ts)
	r.serveBytes("1.snapshot.json", oldSnap)
	if err := r.client(dir).Refresh(); !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
		t.Errorf("Refresh with snapshot v1 = %v, want ErrBadVersionNumber", err)
	}
	if diff := cmp.Diff(want, cache(t, dir)); diff != "" {
		t.Errorf("cache changed by refused snapshot rollback (-want +got):\n%s", diff)
	}

	// A newer snapshot naming the old targets and apps. The new timestamp is valid and is
	// kept; snapshot and targets stay as they were.
	snap, ts := forge(t, r.onlineKey, 3, 3, r.now.Add(day), map[string][]byte{"targets.json": oldTargets, "apps.json": oldApps})
	r.serveBytes("timestamp.json", ts)
	r.serveBytes("3.snapshot.json", snap)
	if err := r.client(dir).Refresh(); !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
		t.Errorf("Refresh with targets v1 = %v, want ErrBadVersionNumber", err)
	}
	got := cache(t, dir)
	for _, f := range []string{"root.json", "snapshot.json", "targets.json", "apps.json"} {
		if got[f] != want[f] {
			t.Errorf("cached %s changed by refused targets rollback", f)
		}
	}

	// The view itself never takes an old version.
	if err := r.view.PutTargets(oldTargets); !errors.Is(err, ErrVersion) {
		t.Errorf("PutTargets(v1 after v2) = %v, want ErrVersion", err)
	}
	if err := r.view.PutApps(oldApps); !errors.Is(err, ErrVersion) {
		t.Errorf("PutApps(v1 after v2) = %v, want ErrVersion", err)
	}
}

// TestTUF_RejectsFreeze: a client refuses a timestamp past its expiry; the view re-signs
// the timestamp before that and never publishes expired offline metadata.
func TestTUF_RejectsFreeze(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	dir := t.TempDir()
	up := r.client(dir)
	up.UnsafeSetRefTime(r.now.Add(day + time.Minute))
	if err := up.Refresh(); !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
		t.Errorf("Refresh after timestamp expiry = %v, want ErrExpiredMetadata", err)
	}

	// RefreshTimestamp: nothing while more than half the TTL is left, then a new version.
	online := signerOf(t, r.onlineKey)
	ts1 := r.file("timestamp.json")
	if err := r.view.RefreshTimestamp(online, r.now.Add(time.Hour), day); err != nil || !bytes.Equal(ts1, r.file("timestamp.json")) {
		t.Errorf("RefreshTimestamp(1h in) = %v, changed = %v; want nil, false", err, !bytes.Equal(ts1, r.file("timestamp.json")))
	}
	later := r.now.Add(20 * time.Hour)
	if err := r.view.RefreshTimestamp(online, later, day); err != nil {
		t.Fatalf("RefreshTimestamp(20h in) = %v", err)
	}
	ts2 := must(metadata.Timestamp().FromBytes(r.file("timestamp.json")))(t)
	if ts2.Signed.Version != 2 || !ts2.Signed.Expires.After(r.now.Add(day)) {
		t.Errorf("refreshed timestamp version %d expires %s; want 2, after %s", ts2.Signed.Version, ts2.Signed.Expires, r.now.Add(day))
	}
	up = r.client(t.TempDir())
	up.UnsafeSetRefTime(r.now.Add(day + time.Minute))
	if err := up.Refresh(); err != nil {
		t.Errorf("Refresh with refreshed timestamp = %v", err)
	}
	// Near the snapshot's expiry, RefreshTimestamp publishes a new snapshot too.
	if err := r.view.RefreshTimestamp(online, r.now.Add(6*day+20*time.Hour), day); err != nil {
		t.Fatalf("RefreshTimestamp(near snapshot expiry) = %v", err)
	}
	if _, err := r.view.File("2.snapshot.json"); err != nil {
		t.Errorf("no new snapshot near the old one's expiry: %v", err)
	}

	// Publish refuses expired offline metadata.
	if err := r.view.Publish(online, r.now.Add(2*year), 7*day, day); !errors.Is(err, ErrExpired) {
		t.Errorf("Publish with expired targets = %v, want ErrExpired", err)
	}
}

// TestTUF_RejectsMixAndMatch: apps.json of another repository state served under the name
// the snapshot points at is refused by its length and hash.
func TestTUF_RejectsMixAndMatch(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	tsA := r.file("timestamp.json")
	r.appsTargets["apps/dw100-app/2.0.0"] = r.addBlob("apps/dw100-app/2.0.0", []byte("dw100 app 2.0.0"))
	r.putApps()
	r.publish()
	r.serveBytes("timestamp.json", tsA)                // state A: snapshot 1, apps 1
	r.serveBytes("1.apps.json", r.file("2.apps.json")) // with apps of state B
	_, err := r.install(t.TempDir(), appPath)
	if !lengthOrHash(err) {
		t.Errorf("install with apps of another state = %v, want a length or hash mismatch", err)
	}
	// Targets of state B under state A's name: refused the same way.
	r.putTargets()
	r.publish()
	r.serveBytes("1.targets.json", r.file("2.targets.json"))
	if err := r.client(t.TempDir()).Refresh(); !lengthOrHash(err) {
		t.Errorf("Refresh with targets of another state = %v, want a length or hash mismatch", err)
	}
	// Same length, other bytes: the hash catches it.
	r.setOverride("timestamp.json", nil)
	r.setOverride("1.targets.json", nil)
	b := r.file("2.targets.json")
	b[len(b)-3] ^= 1
	r.serveBytes("2.targets.json", b)
	if err := r.client(t.TempDir()).Refresh(); !errors.Is(err, &metadata.ErrLengthOrHashMismatch{}) {
		t.Errorf("Refresh with same-length other targets = %v, want ErrLengthOrHashMismatch", err)
	}
}

// lengthOrHash: the snapshot's length bounds the download (a longer file stops there) and
// its hash catches the rest.
func lengthOrHash(err error) bool {
	return errors.Is(err, &metadata.ErrLengthOrHashMismatch{}) || errors.Is(err, &metadata.ErrDownloadLengthMismatch{})
}

// TestTUF_RejectsEndlessData: a server that never stops sending metadata or a target is cut
// off at the client's configured maximum length.
func TestTUF_RejectsEndlessData(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	var mu sync.Mutex
	sent := map[string]int{}
	endless := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			chunk := bytes.Repeat([]byte("{"), 4096)
			for req.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
				mu.Lock()
				sent[name] += len(chunk)
				n := sent[name]
				mu.Unlock()
				if n > 64<<20 {
					t.Errorf("client read %d bytes of %s without stopping", n, name)
					return
				}
			}
		}
	}
	r.setOverride("timestamp.json", endless("timestamp.json"))
	if err := r.client(t.TempDir()).Refresh(); !errors.Is(err, &metadata.ErrDownloadLengthMismatch{}) {
		t.Errorf("Refresh with endless timestamp = %v, want ErrDownloadLengthMismatch", err)
	}
	r.setOverride("timestamp.json", nil)

	tf := r.appsTargets[appPath]
	r.setOverride("targets/apps/dw100-app/"+tf.SHA256+".1.0.0", endless("target"))
	if _, err := r.install(t.TempDir(), appPath); !errors.Is(err, &metadata.ErrDownloadLengthMismatch{}) {
		t.Errorf("install with endless target = %v, want ErrDownloadLengthMismatch", err)
	}
}

// TestTUF_RootRotation: five valid rotations reach a client pinned at version 1; a root
// signed by fewer than a threshold of the previous root keys is refused by the view and by
// the client.
func TestTUF_RootRotation(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	dir := t.TempDir()
	if _, err := r.install(dir, appPath); err != nil {
		t.Fatal(err)
	}
	prev := []*ecdsa.PrivateKey{r.rootKey}
	prevThreshold := 1
	for v := int64(2); v <= 6; v++ {
		next := []*ecdsa.PrivateKey{newKey(t), newKey(t), newKey(t)}
		var signers []signature.Signer
		for _, k := range append(prev[:prevThreshold:prevThreshold], next[:2]...) {
			signers = append(signers, signerOf(t, k))
		}
		root := must(SignRoot(signers, v, r.now.Add(year), RootKeys{
			Root: pubs(next), RootThreshold: 2, OS: &r.osKey.PublicKey, Online: &r.onlineKey.PublicKey,
		}))(t)
		if err := r.view.PutRoot(root); err != nil {
			t.Fatalf("PutRoot(v%d) = %v", v, err)
		}
		prev, prevThreshold = next, 2
	}
	r.publish()
	up := r.client(dir)
	if err := up.Refresh(); err != nil {
		t.Fatalf("Refresh after 5 rotations = %v", err)
	}
	if got := up.GetTrustedMetadataSet().Root.Signed.Version; got != 6 {
		t.Errorf("client root version = %d, want 6", got)
	}
	fresh := t.TempDir() // pinned at 1.root.json only
	if _, err := r.install(fresh, appPath); err != nil {
		t.Errorf("install from 1.root.json after 5 rotations = %v", err)
	}

	// Version 7 signed by one of the three version-6 keys (threshold 2) and its own key.
	own := newKey(t)
	bad := must(SignRoot([]signature.Signer{signerOf(t, prev[0]), signerOf(t, own)}, 7, r.now.Add(year), RootKeys{
		Root: []*ecdsa.PublicKey{&own.PublicKey}, RootThreshold: 1, OS: &r.osKey.PublicKey, Online: &r.onlineKey.PublicKey,
	}))(t)
	if err := r.view.PutRoot(bad); !errors.Is(err, ErrSignature) {
		t.Errorf("PutRoot(below threshold) = %v, want ErrSignature", err)
	}
	if _, err := r.view.File("7.root.json"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused root is served: %v", err)
	}
	r.serveBytes("7.root.json", bad)
	if err := r.client(dir).Refresh(); !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Errorf("client Refresh with below-threshold root = %v, want ErrUnsignedMetadata", err)
	}
	// Not signed by its own keys, or skipping a version: refused too.
	good := signerOf(t, prev[0])
	notOwn := must(SignRoot([]signature.Signer{good, signerOf(t, prev[1]), signerOf(t, own)}, 7, r.now.Add(year), RootKeys{
		Root: []*ecdsa.PublicKey{&own.PublicKey}, RootThreshold: 1, OS: &r.osKey.PublicKey, Online: &r.onlineKey.PublicKey,
	}))(t)
	if err := r.view.PutRoot(notOwn); err != nil {
		t.Errorf("PutRoot(threshold of old and own) = %v", err)
	}
	skip := must(SignRoot([]signature.Signer{signerOf(t, own)}, 9, r.now.Add(year), RootKeys{
		Root: []*ecdsa.PublicKey{&own.PublicKey}, RootThreshold: 1, OS: &r.osKey.PublicKey, Online: &r.onlineKey.PublicKey,
	}))(t)
	if err := r.view.PutRoot(skip); !errors.Is(err, ErrVersion) {
		t.Errorf("PutRoot(v9 after v7) = %v, want ErrVersion", err)
	}
}

func pubs(ks []*ecdsa.PrivateKey) []*ecdsa.PublicKey {
	out := make([]*ecdsa.PublicKey, len(ks))
	for i, k := range ks {
		out[i] = &k.PublicKey
	}
	return out
}

// TestTUF_RejectsPathTraversal: target names that leave the apps namespace or are not
// canonical are refused, by PutApps even when correctly signed, and by SignApps.
func TestTUF_RejectsPathTraversal(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	for _, name := range []string{
		"apps/../etc/passwd", "apps/dw100/../../x", "/apps/dw100/1.0.0", "apps/./dw100/1", "apps//dw100/1",
		"apps/dw100/1.0.0/", "apps/dw100/..", "../apps/dw100/1", "os/retail/2.0.0", "apps\\dw100\\1",
		"apps/dw100/1\x00", "apps/dw100/1 0", "apps/dw100", "apps/a/b/c", "apps/dw100/%2e%2e", "apps/dw100/é",
		"apps", "", "Apps/dw100/1",
	} {
		if err := r.view.PutApps(signRawApps(t, r.appKey, 2, r.now.Add(year), name)); !errors.Is(err, ErrPath) {
			t.Errorf("PutApps(%q) = %v, want ErrPath", name, err)
		}
		if _, err := SignApps(signerOf(t, r.appKey), 2, r.now.Add(year), map[string]TargetFile{name: r.appsTargets[appPath]}); !errors.Is(err, ErrPath) {
			t.Errorf("SignApps(%q) = %v, want ErrPath", name, err)
		}
	}
	if _, err := r.view.File("2.apps.json"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused apps.json is served: %v", err)
	}
	// OS targets stay under os/: the OS key cannot shadow a tenant's apps path.
	if _, err := SignTargets(signerOf(t, r.osKey), 5, r.now.Add(year), map[string]TargetFile{appPath: r.appsTargets[appPath]}, r.targetsKeys); !errors.Is(err, ErrPath) {
		t.Errorf("SignTargets(apps path) = %v, want ErrPath", err)
	}
}

// TestTUF_TenantKeyRotation: targets v2 delegates apps to a new tenant key; apps signed by
// the old key is then refused, by the new key accepted, and a device pinned at the same root
// installs it.
func TestTUF_TenantKeyRotation(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	dir := t.TempDir()
	if _, err := r.install(dir, appPath); err != nil {
		t.Fatal(err)
	}
	newTenant := newKey(t)
	r.targetsKeys = []*ecdsa.PublicKey{&newTenant.PublicKey}
	r.putTargets()
	r.appsTargets["apps/dw100-app/1.1.0"] = r.addBlob("apps/dw100-app/1.1.0", []byte("dw100 app 1.1.0"))
	oldSigned := must(SignApps(signerOf(t, r.appKey), 2, r.now.Add(year), r.appsTargets))(t)
	if err := r.view.PutApps(oldSigned); !errors.Is(err, ErrSignature) {
		t.Errorf("PutApps(signed by rotated-out key) = %v, want ErrSignature", err)
	}
	r.appsSigner = newTenant
	r.putApps()
	r.publish()
	if got, err := r.install(dir, "apps/dw100-app/1.1.0"); err != nil || string(got) != "dw100 app 1.1.0" {
		t.Errorf("install after tenant key rotation = %q, %v", got, err)
	}
	if _, err := r.view.File("2.root.json"); !errors.Is(err, ErrNotFound) {
		t.Errorf("tenant key rotation needed a new root: %v", err)
	}
}

// TestView_PutLeavesViewUnchanged: every refused Put and Publish leaves all files as they
// were (rule 5).
func TestView_PutLeavesViewUnchanged(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	names := []string{"1.root.json", "1.targets.json", "1.apps.json", "1.snapshot.json", "timestamp.json"}
	snapshot := func() map[string]string {
		m := map[string]string{}
		for _, n := range names {
			m[n] = string(r.file(n))
		}
		for _, n := range []string{"2.root.json", "2.targets.json", "2.apps.json", "2.snapshot.json"} {
			if _, err := r.view.File(n); !errors.Is(err, ErrNotFound) {
				m[n] = "present"
			}
		}
		return m
	}
	want := snapshot()
	wrongOnline := newKey(t)
	cases := map[string]struct {
		do   func() error
		want error
	}{
		"garbage targets":      {func() error { return r.view.PutTargets([]byte("{")) }, ErrMalformed},
		"root as targets":      {func() error { return r.view.PutTargets(r.root1) }, ErrMalformed},
		"garbage apps":         {func() error { return r.view.PutApps([]byte("[]")) }, ErrMalformed},
		"unsigned apps":        {func() error { return r.view.PutApps([]byte(`{"signed":{"_type":"targets"}}`)) }, ErrSignature},
		"garbage root":         {func() error { return r.view.PutRoot([]byte("null")) }, ErrMalformed},
		"same root again":      {func() error { return r.view.PutRoot(r.root1) }, ErrVersion},
		"targets same version": {func() error { return r.view.PutTargets(r.file("1.targets.json")) }, ErrVersion},
		"apps same version":    {func() error { return r.view.PutApps(r.file("1.apps.json")) }, ErrVersion},
		"publish wrong online key": {func() error {
			return r.view.Publish(signerOf(t, wrongOnline), r.now, day, day)
		}, ErrSignature},
		"targets without delegation": {func() error {
			tm := metadata.Targets(r.now.Add(year))
			tm.Signed.Version = 2
			must(tm.Sign(signerOf(t, r.osKey)))(t)
			return r.view.PutTargets(must(tm.ToBytes(false))(t))
		}, ErrMalformed},
		"apps delegating further": {func() error {
			a := must(metadata.Targets().FromBytes(signRawApps(t, r.appKey, 2, r.now.Add(year), "apps/a/1")))(t)
			a.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}}
			a.ClearSignatures()
			must(a.Sign(signerOf(t, r.appKey)))(t)
			return r.view.PutApps(must(a.ToBytes(false))(t))
		}, ErrMalformed},
	}
	for name, c := range cases {
		if err := c.do(); !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", name, err, c.want)
		}
		if diff := cmp.Diff(want, snapshot()); diff != "" {
			t.Errorf("%s changed the view (-want +got):\n%s", name, diff)
		}
	}
}

// TestView_Concurrent: readers and writers at once, for the race detector.
func TestView_Concurrent(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	online := signerOf(t, r.onlineKey)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				if _, err := r.view.File("timestamp.json"); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if err := r.view.Publish(online, r.now, 7*day, day); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
}
