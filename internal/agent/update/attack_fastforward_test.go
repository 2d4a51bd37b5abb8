package update_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tuf"
)

// TestUpdate_RecoversFromFastForwardAfterKeyRotation is ATTACKS row 16 (fast-forward, as
// go-tuf's TestNewTimestampFastForwardRecovery and TestNewSnapshotFastForwardRecovery): an
// attacker holding the server's online key signs a timestamp and a snapshot with version
// 2^62, and the device's update client takes them (they are validly signed). Once the
// attacker is gone the device refuses the real, lower versions: it is frozen. The platform
// then signs a new root that replaces the online key (snapshot and timestamp), and the
// device, from its own state directory, accepts the repository again and installs.
func TestUpdate_RecoversFromFastForwardAfterKeyRotation(t *testing.T) {
	t.Parallel()
	sim := newSimRepo(t)
	state := t.TempDir()
	cfg := sim.config(state)
	check := func(counter uint64) (update.Plan, error) {
		c, err := update.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c.Check(t.Context(), sim.assign(counter))
	}
	if _, err := check(1); err != nil {
		t.Fatalf("Check before the attack = %v", err)
	}

	// The attacker, with the stolen online key, fast-forwards snapshot and timestamp.
	const huge = int64(1) << 62
	snap, ts := sim.forge(sim.online, huge)
	sim.serve(map[string][]byte{"timestamp.json": ts, fmt.Sprintf("%d.snapshot.json", huge): snap})
	if _, err := check(2); err != nil {
		t.Fatalf("Check with the fast-forwarded metadata = %v; the attacker's signature is valid, the device should take it", err)
	}
	if v := cachedVersion(t, state, metadata.TIMESTAMP); v != huge {
		t.Fatalf("cached timestamp version = %d, want %d (the attack did not land)", v, huge)
	}

	// The attacker is gone: the real repository's versions are lower, and refused.
	sim.serve(nil)
	sim.republish(sim.online)
	if _, err := check(3); !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
		t.Fatalf("Check after the attack = %v, want ErrBadVersionNumber (frozen by the fast-forward)", err)
	}

	// Recovery: a new root (signed offline by the root key) names a new online key.
	newOnline := genKey(t)
	sim.rotateOnline(newOnline)
	plan, err := check(3)
	if err != nil {
		t.Fatalf("Check after the online key rotation = %v, want the device to recover", err)
	}
	if len(plan.Images) != 1 || plan.Images[0].Path != sim.app.path {
		t.Fatalf("plan after recovery = %+v, want %s", plan, sim.app.path)
	}
	if v := cachedVersion(t, state, metadata.TIMESTAMP); v >= huge {
		t.Errorf("cached timestamp version after recovery = %d, want the repository's own", v)
	}
	if v := cachedVersion(t, state, metadata.SNAPSHOT); v >= huge {
		t.Errorf("cached snapshot version after recovery = %d, want the repository's own", v)
	}
	if v := cachedVersion(t, state, metadata.ROOT); v != 2 {
		t.Errorf("cached root version = %d, want 2", v)
	}
	c, err := update.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "app.pkg")
	if err := c.Download(t.Context(), plan.Images[0], dst); err != nil {
		t.Fatalf("Download after recovery = %v", err)
	}
	// The old online key signs nothing the device takes any more.
	snap, ts = sim.forge(sim.online, huge+1)
	sim.serve(map[string][]byte{"timestamp.json": ts, fmt.Sprintf("%d.snapshot.json", huge+1): snap})
	if _, err := check(4); !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Errorf("Check with metadata signed by the replaced online key = %v, want ErrUnsignedMetadata", err)
	}
}

// simRepo is a TUF repository simulator in the spirit of go-tuf's: a tuf.View (what the
// server publishes) served over TLS, with the offline keys at hand and a knob to serve
// other bytes for some names (an attacker holding the online key).
type simRepo struct {
	t                      *testing.T
	rootKey, osKey, appKey *ecdsa.PrivateKey
	online, director       *ecdsa.PrivateKey
	root                   []byte
	view                   *tuf.View
	srv                    *httptest.Server
	expires                time.Time
	app                    pkg
	mu                     sync.Mutex
	override               map[string][]byte
}

func newSimRepo(t *testing.T) *simRepo {
	t.Helper()
	s := &simRepo{t: t, rootKey: genKey(t), osKey: genKey(t), appKey: genKey(t), online: genKey(t), director: genKey(t),
		expires: time.Now().Add(365 * 24 * time.Hour)}
	var err error
	s.root, err = tuf.NewRoot(tufSigner(t, s.rootKey), &s.rootKey.PublicKey, &s.osKey.PublicKey, &s.online.PublicKey, s.expires)
	if err != nil {
		t.Fatal(err)
	}
	if s.view, err = tuf.Open(s.root); err != nil {
		t.Fatal(err)
	}
	targets, err := tuf.SignTargets(tufSigner(t, s.osKey), 1, s.expires, nil, []*ecdsa.PublicKey{&s.appKey.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.view.PutTargets(targets); err != nil {
		t.Fatal(err)
	}
	s.app = packApp(t, "1.0.0", 1)
	apps, err := tuf.SignApps(tufSigner(t, s.appKey), 1, s.expires, map[string]tuf.TargetFile{
		s.app.path: {Length: s.app.size, SHA256: s.app.sha, Custom: target.Custom{
			Kind: target.KindApp, Version: "1.0.0", SecurityVersion: 1, ComponentID: "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10", Product: "DW100"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.view.PutApps(apps); err != nil {
		t.Fatal(err)
	}
	s.republish(s.online)
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *simRepo) handle(w http.ResponseWriter, r *http.Request) {
	if name, ok := strings.CutPrefix(r.URL.Path, "/metadata/"); ok {
		s.mu.Lock()
		data, forged := s.override[name]
		s.mu.Unlock()
		if !forged {
			var err error
			if data, err = s.view.File(name); err != nil {
				http.NotFound(w, r)
				return
			}
		}
		w.Write(data)
		return
	}
	if r.URL.Path == "/targets/apps/dw100-app/"+s.app.sha+".1.0.0" {
		w.Write(s.app.bytes)
		return
	}
	http.NotFound(w, r)
}

// serve makes the server answer the named metadata files with the given bytes; nil ends
// every override.
func (s *simRepo) serve(files map[string][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.override = files
}

// republish signs a new snapshot and timestamp with the online key, as the server does.
func (s *simRepo) republish(online *ecdsa.PrivateKey) {
	s.t.Helper()
	if err := s.view.Publish(tufSigner(s.t, online), time.Now(), 7*24*time.Hour, 24*time.Hour); err != nil {
		s.t.Fatal(err)
	}
}

// rotateOnline signs root version 2 with the root key, naming online for snapshot and
// timestamp, and publishes with it.
func (s *simRepo) rotateOnline(online *ecdsa.PrivateKey) {
	s.t.Helper()
	root2, err := tuf.SignRoot([]signature.Signer{tufSigner(s.t, s.rootKey)}, 2, s.expires, tuf.RootKeys{
		Root: []*ecdsa.PublicKey{&s.rootKey.PublicKey}, RootThreshold: 1, OS: &s.osKey.PublicKey, Online: &online.PublicKey,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.view.PutRoot(root2); err != nil {
		s.t.Fatal(err)
	}
	s.republish(online)
}

// forge signs, with key, a snapshot of the given version listing the repository's current
// targets.json and apps.json, and a timestamp of the same version naming it.
func (s *simRepo) forge(key *ecdsa.PrivateKey, version int64) (snapRaw, tsRaw []byte) {
	s.t.Helper()
	real, err := s.view.File("timestamp.json")
	if err != nil {
		s.t.Fatal(err)
	}
	cur, err := metadata.Timestamp().FromBytes(real)
	if err != nil {
		s.t.Fatal(err)
	}
	snapName := fmt.Sprintf("%d.snapshot.json", cur.Signed.Meta["snapshot.json"].Version)
	realSnap, err := s.view.File(snapName)
	if err != nil {
		s.t.Fatal(err)
	}
	rs, err := metadata.Snapshot().FromBytes(realSnap)
	if err != nil {
		s.t.Fatal(err)
	}
	exp := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	snap := metadata.Snapshot(exp)
	snap.Signed.Version = version
	snap.Signed.Meta = rs.Signed.Meta
	if _, err := snap.Sign(tufSigner(s.t, key)); err != nil {
		s.t.Fatal(err)
	}
	if snapRaw, err = snap.ToBytes(false); err != nil {
		s.t.Fatal(err)
	}
	ts := metadata.Timestamp(exp)
	ts.Signed.Version = version
	ts.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": {Version: version}}
	if _, err := ts.Sign(tufSigner(s.t, key)); err != nil {
		s.t.Fatal(err)
	}
	if tsRaw, err = ts.ToBytes(false); err != nil {
		s.t.Fatal(err)
	}
	return snapRaw, tsRaw
}

// config is the device's update client configuration against the simulator.
func (s *simRepo) config(stateDir string) update.Config {
	return update.Config{
		MetadataURL: s.srv.URL + "/metadata/", TargetsURL: s.srv.URL + "/targets/", Root: s.root,
		DirectorKey: &s.director.PublicKey, DeviceID: deviceID, TenantID: "ten_sim", StateDir: stateDir,
		HTTPClient: s.srv.Client(), Now: time.Now, MaxMetadataBytes: 1 << 20,
		FetchOptions: blob.FetchOptions{StallTimeout: 10 * time.Second, Timeout: time.Minute},
	}
}

// assign is an assignment of the simulator's app with counter, signed by its director key.
func (s *simRepo) assign(counter uint64) []byte {
	s.t.Helper()
	now := time.Now()
	b, err := director.Issue(s.director, director.Assignment{
		Version: director.Format, DeviceID: deviceID, TenantID: "ten_sim", Counter: counter,
		IssuedAt: now, ExpiresAt: now.Add(time.Hour), Images: []director.Image{s.app.image(1)},
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// packApp packs the DW100 app at version without uploading it anywhere.
func packApp(t *testing.T, version string, securityVersion uint32) pkg {
	t.Helper()
	dir := t.TempDir()
	manifest := fmt.Sprintf(`{"format":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","name":"dw100-app",`+
		`"kind":"app","version":%q,"security_version":%d,"product":"DW100","app":{"entry_point":"bin/app","capabilities":{}}}`,
		version, securityVersion)
	if err := os.WriteFile(filepath.Join(dir, image.AppManifestFile), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "app"), []byte("#!/bin/sh\necho dw100 "+version+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := image.Pack(t.Context(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return pkg{bytes: buf.Bytes(), path: "apps/dw100-app/" + version, sha: hex.EncodeToString(sum[:]), size: int64(buf.Len())}
}

// cachedVersion is the version of the role's metadata the client trusts, from its cache.
func cachedVersion(t *testing.T, stateDir, role string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "tuf", role+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Signed struct {
			Version int64 `json:"version"`
		} `json:"signed"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Signed.Version
}
