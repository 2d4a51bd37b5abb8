package tuf

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
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
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
)

const (
	appPath = "apps/dw100-app/1.0.0"
	osPath  = "os/retail/1.0.0"
	year    = 365 * 24 * time.Hour
	day     = 24 * time.Hour
)

// repo is a test repository: a View with its offline and online keys, served over HTTP by
// a real server, with a fault-injection knob (override) for the attack tests.
type repo struct {
	t                                 testing.TB
	rootKey, osKey, onlineKey, appKey *ecdsa.PrivateKey
	root1                             []byte
	view                              *View
	now                               time.Time
	srv                               *httptest.Server
	mu                                sync.Mutex
	blobs                             map[string][]byte // by remote path under /targets/
	override                          map[string]http.HandlerFunc
	appsTargets, osTargets            map[string]TargetFile
	targetsVersion, appsVersion       int64
	targetsKeys                       []*ecdsa.PublicKey
	targetsSigner                     *ecdsa.PrivateKey
	appsSigner                        *ecdsa.PrivateKey
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signerOf(t testing.TB, k *ecdsa.PrivateKey) signature.Signer {
	t.Helper()
	s, err := keys.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// must(f())(t) is f's result, or a fatal test error.
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// newRepo builds a view with targets v1 (one OS image) and apps v1 (one app), published.
func newRepo(t testing.TB) *repo {
	t.Helper()
	r := &repo{
		t: t, rootKey: newKey(t), osKey: newKey(t), onlineKey: newKey(t), appKey: newKey(t),
		now: time.Now(), blobs: map[string][]byte{}, override: map[string]http.HandlerFunc{},
		appsTargets: map[string]TargetFile{}, osTargets: map[string]TargetFile{},
	}
	r.targetsSigner, r.appsSigner = r.osKey, r.appKey
	r.targetsKeys = []*ecdsa.PublicKey{&r.appKey.PublicKey}
	r.root1 = must(NewRoot(signerOf(t, r.rootKey), &r.rootKey.PublicKey, &r.osKey.PublicKey, &r.onlineKey.PublicKey, r.now.Add(year)))(t)
	r.view = must(Open(r.root1))(t)
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)

	r.osTargets[osPath] = r.addBlob(osPath, []byte("os image 1.0.0"))
	r.putTargets()
	r.appsTargets[appPath] = r.addBlob(appPath, []byte("dw100 app 1.0.0"))
	r.putApps()
	r.publish()
	return r
}

// addBlob stores content where go-tuf's updater asks for a consistent-snapshot target:
// "<dir>/<sha256>.<basename>" under the targets URL.
func (r *repo) addBlob(name string, content []byte) TargetFile {
	sum := sha256.Sum256(content)
	h := hex.EncodeToString(sum[:])
	dir, base := name[:strings.LastIndex(name, "/")], name[strings.LastIndex(name, "/")+1:]
	r.mu.Lock()
	r.blobs[dir+"/"+h+"."+base] = content
	r.mu.Unlock()
	return TargetFile{Length: int64(len(content)), SHA256: h, Custom: customFor(name)}
}

// customFor is valid custom metadata for the target at name (os/... or apps/...).
func customFor(name string) target.Custom {
	c := target.Custom{Kind: target.KindApp, Version: name[strings.LastIndex(name, "/")+1:],
		SecurityVersion: 1, ComponentID: "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10", Product: "DW100"}
	if strings.HasPrefix(name, "os/") {
		c.Kind, c.Product, c.Feeds = target.KindOS, "", []string{"Retail"}
	}
	return c
}

func (r *repo) putTargets() {
	r.t.Helper()
	r.targetsVersion++
	data := must(SignTargets(signerOf(r.t, r.targetsSigner), r.targetsVersion, r.now.Add(year), r.osTargets, r.targetsKeys))(r.t)
	if err := r.view.PutTargets(data); err != nil {
		r.t.Fatalf("PutTargets(v%d) = %v", r.targetsVersion, err)
	}
}

func (r *repo) putApps() {
	r.t.Helper()
	r.appsVersion++
	data := must(SignApps(signerOf(r.t, r.appsSigner), r.appsVersion, r.now.Add(year), r.appsTargets))(r.t)
	if err := r.view.PutApps(data); err != nil {
		r.t.Fatalf("PutApps(v%d) = %v", r.appsVersion, err)
	}
}

func (r *repo) publish() {
	r.t.Helper()
	if err := r.view.Publish(signerOf(r.t, r.onlineKey), r.now, 7*day, day); err != nil {
		r.t.Fatalf("Publish = %v", err)
	}
}

func (r *repo) file(name string) []byte {
	r.t.Helper()
	return must(r.view.File(name))(r.t)
}

// setView makes the server serve v from now on, as after a restart.
func (r *repo) setView(v *View) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.view = v
}

// serveBytes makes the server answer name with data instead of the view's file.
func (r *repo) serveBytes(name string, data []byte) {
	r.setOverride(name, func(w http.ResponseWriter, _ *http.Request) { w.Write(data) })
}

func (r *repo) setOverride(name string, h http.HandlerFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.override[name] = h
}

func (r *repo) serve(w http.ResponseWriter, req *http.Request) {
	if name, ok := strings.CutPrefix(req.URL.Path, "/metadata/"); ok {
		r.mu.Lock()
		h, view := r.override[name], r.view
		r.mu.Unlock()
		if h != nil {
			h(w, req)
			return
		}
		data, err := view.File(name)
		if errors.Is(err, ErrNotFound) {
			http.NotFound(w, req)
			return
		}
		w.Write(data)
		return
	}
	if name, ok := strings.CutPrefix(req.URL.Path, "/targets/"); ok {
		r.mu.Lock()
		h, data := r.override["targets/"+name], r.blobs[name]
		r.mu.Unlock()
		if h != nil {
			h(w, req)
			return
		}
		if data == nil {
			http.NotFound(w, req)
			return
		}
		w.Write(data)
		return
	}
	http.NotFound(w, req)
}

// client starts a go-tuf updater with its cache in dir, trusting the cached root.json if
// dir holds one (a restarted device) and the pinned 1.root.json otherwise.
func (r *repo) client(dir string) *updater.Updater {
	r.t.Helper()
	root := r.root1
	if b, err := os.ReadFile(filepath.Join(dir, "metadata", "root.json")); err == nil {
		root = b
	}
	cfg := must(config.New(r.srv.URL+"/metadata/", root))(r.t)
	cfg.LocalMetadataDir = filepath.Join(dir, "metadata")
	cfg.LocalTargetsDir = filepath.Join(dir, "targets")
	cfg.RemoteTargetsURL = r.srv.URL + "/targets/"
	if err := cfg.SetDefaultFetcherHTTPClient(r.srv.Client()); err != nil {
		r.t.Fatal(err)
	}
	return must(updater.New(cfg))(r.t)
}

// install runs a whole client update for path and returns the downloaded bytes.
func (r *repo) install(dir, path string) ([]byte, error) {
	r.t.Helper()
	up := r.client(dir)
	if err := up.Refresh(); err != nil {
		return nil, fmt.Errorf("refresh: %w", err)
	}
	ti, err := up.GetTargetInfo(path)
	if err != nil {
		return nil, fmt.Errorf("target info: %w", err)
	}
	_, data, err := up.DownloadTarget(ti, "", "")
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	return data, nil
}

// cache returns every file of the client's metadata cache.
func cache(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents := must(os.ReadDir(filepath.Join(dir, "metadata")))(t)
	for _, e := range ents {
		out[e.Name()] = string(must(os.ReadFile(filepath.Join(dir, "metadata", e.Name())))(t))
	}
	return out
}

// forge signs a snapshot and a timestamp with key (an attacker holding the online key):
// the snapshot lists meta (role file name -> raw bytes), the timestamp points at it.
func forge(t testing.TB, key *ecdsa.PrivateKey, snapVersion, tsVersion int64, expires time.Time, meta map[string][]byte) (snapRaw, tsRaw []byte) {
	t.Helper()
	s := metadata.Snapshot(expiry(expires))
	s.Signed.Version = snapVersion
	s.Signed.Meta = map[string]*metadata.MetaFiles{}
	for name, raw := range meta {
		tm := must(metadata.Targets().FromBytes(raw))(t)
		s.Signed.Meta[name] = metaFile(tm.Signed.Version, raw)
	}
	must(s.Sign(signerOf(t, key)))(t)
	snapRaw = must(s.ToBytes(false))(t)
	ts := metadata.Timestamp(expiry(expires))
	ts.Signed.Version = tsVersion
	ts.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": metaFile(snapVersion, snapRaw)}
	must(ts.Sign(signerOf(t, key)))(t)
	return snapRaw, must(ts.ToBytes(false))(t)
}

// signRawApps signs an apps.json listing names as they are, bypassing SignApps's checks,
// as an attacker or a buggy tool would.
func signRawApps(t testing.TB, key *ecdsa.PrivateKey, version int64, expires time.Time, names ...string) []byte {
	t.Helper()
	a := metadata.Targets(expiry(expires))
	a.Signed.Version = version
	sum := sha256.Sum256([]byte("x"))
	for _, n := range names {
		a.Signed.Targets[n] = &metadata.TargetFiles{Length: 1, Hashes: metadata.Hashes{"sha256": sum[:]}, Path: n}
	}
	must(a.Sign(signerOf(t, key)))(t)
	return must(a.ToBytes(false))(t)
}
