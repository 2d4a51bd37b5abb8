package update_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/director"
)

func TestUpdate_InstallsAssignedImage(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	state := t.TempDir()
	c := w.newClient(state)

	plan, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(1)))
	if err != nil {
		t.Fatalf("Check = %v", err)
	}
	cfg := w.config(state)
	want := update.PlannedImage{
		Kind: director.KindApp, Path: p.path, SHA256: p.sha, Length: p.size, Version: "1.0.0",
		SecurityVersion: 1, URL: cfg.TargetsURL + "apps/dw100-app/" + p.sha + ".1.0.0",
	}
	if plan.Counter != 1 || len(plan.Images) != 1 || plan.Images[0] != want {
		t.Fatalf("plan = %+v, want counter 1 and %+v", plan, want)
	}
	if got := counter(t, state); got != "1\n" {
		t.Errorf("counter file = %q, want 1", got)
	}
	dst := filepath.Join(t.TempDir(), "app.img")
	if err := c.Download(t.Context(), plan.Images[0], dst); err != nil {
		t.Fatalf("Download = %v", err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, p.bytes) {
		t.Errorf("downloaded %d bytes (%v), want the %d-byte package", len(got), err, len(p.bytes))
	}
	if err := c.Commit(director.KindApp, 1); err != nil {
		t.Fatalf("Commit = %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(state, "floors.json")); err != nil || string(b) != `{"app":1,"os":0}`+"\n" {
		t.Errorf("floors.json = %q, %v; want app 1, os 0", b, err)
	}
	// The next assignment, assigning nothing, is accepted against the cached root.
	if plan, err := w.newClient(state).Check(t.Context(), w.assign(deviceID, 2)); err != nil || len(plan.Images) != 0 {
		t.Errorf("Check of an empty assignment = %+v, %v; want an empty plan", plan, err)
	}
}

// TestUpdate_RejectsDirectorOnlyCompromise: a stolen director key signs assignments naming
// bytes, paths or security versions the offline-signed repository does not list.
func TestUpdate_RejectsDirectorOnlyCompromise(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	evil := w.upload("6.6.6", 1) // uploaded, never signed

	otherBytes := p.image(1)
	otherBytes.SHA256, otherBytes.Length = evil.sha, evil.size
	higherSV := p.image(1)
	higherSV.SecurityVersion = 7
	cases := map[string]director.Image{
		"other bytes at a signed path": otherBytes,
		"unsigned path":                evil.image(1),
		"other security version":       higherSV,
	}
	for name, im := range cases {
		t.Run(name, func(t *testing.T) {
			state := t.TempDir()
			plan, err := w.newClient(state).Check(t.Context(), w.assign(deviceID, 1, im))
			if !errors.Is(err, director.ErrRepoMismatch) {
				t.Fatalf("Check = %v, want director.ErrRepoMismatch", err)
			}
			if len(plan.Images) != 0 {
				t.Errorf("plan = %+v, want nothing to download", plan)
			}
			if got := counter(t, state); got != "" {
				t.Errorf("counter file = %q, want none: a refused assignment is not recorded", got)
			}
		})
	}
}

func TestUpdate_RejectsAssignmentForOtherDevice(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	state := t.TempDir()
	c := w.newClient(state)
	if _, err := c.Check(t.Context(), w.assign("dw100-0002", 1, p.image(1))); !errors.Is(err, director.ErrWrongDevice) {
		t.Fatalf("Check of another device's assignment = %v, want director.ErrWrongDevice", err)
	}
	if got := counter(t, state); got != "" {
		t.Errorf("counter file = %q, want none", got)
	}
	// The refusal costs nothing: this device's own assignment with the same counter passes.
	if _, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(1))); err != nil {
		t.Errorf("Check = %v", err)
	}
}

func TestUpdate_RejectsReplayedAssignment(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	state := t.TempDir()
	first := w.assign(deviceID, 5, p.image(1))
	if _, err := w.newClient(state).Check(t.Context(), first); err != nil {
		t.Fatalf("Check = %v", err)
	}
	c := w.newClient(state) // a restart: the counter was persisted
	// The same envelope again is no change, not a replay (issue 15): see
	// TestUpdate_ResentAssignmentIsUnchangedOlderIsReplayed.
	for name, a := range map[string][]byte{
		"same counter":   w.assign(deviceID, 5, p.image(1)),
		"lower counter":  w.assign(deviceID, 4, p.image(1)),
		"same, no image": w.assign(deviceID, 5),
	} {
		if _, err := c.Check(t.Context(), a); !errors.Is(err, director.ErrReplayed) {
			t.Errorf("%s: Check = %v, want director.ErrReplayed", name, err)
		}
	}
	if got := counter(t, state); got != "5\n" {
		t.Errorf("counter file = %q, want 5", got)
	}
	if _, err := c.Check(t.Context(), w.assign(deviceID, 6, p.image(1))); err != nil {
		t.Errorf("Check of the next counter = %v", err)
	}
}

// TestUpdate_RejectsRollbackBelowFloor: an older image the offline key did sign, assigned
// after a newer one was installed.
func TestUpdate_RejectsRollbackBelowFloor(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	state := t.TempDir()
	c := w.newClient(state)
	if err := c.Commit(director.KindApp, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(1))); !errors.Is(err, director.ErrBelowFloor) {
		t.Fatalf("Check = %v, want director.ErrBelowFloor", err)
	}
	if got := counter(t, state); got != "" {
		t.Errorf("counter file = %q, want none", got)
	}
}

func TestUpdate_FloorNeverDecreases(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	state := t.TempDir()
	c := w.newClient(state)
	if err := c.Commit(director.KindApp, 3); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(director.KindApp, 2); !errors.Is(err, update.ErrFloorDecrease) {
		t.Errorf("Commit(app, 2) after 3 = %v, want ErrFloorDecrease", err)
	}
	if err := c.Commit(director.KindApp, 3); err != nil {
		t.Errorf("Commit(app, 3) again = %v, want nil", err)
	}
	if err := c.Commit(director.KindOS, 1); err != nil {
		t.Errorf("Commit(os, 1) = %v", err)
	}
	c = w.newClient(state) // persisted
	if err := c.Commit(director.KindApp, 0); !errors.Is(err, update.ErrFloorDecrease) {
		t.Errorf("Commit(app, 0) after a restart = %v, want ErrFloorDecrease", err)
	}
	if err := c.Commit("firmware", 9); err == nil {
		t.Error("Commit of an unknown kind succeeded")
	}
	if b, err := os.ReadFile(filepath.Join(state, "floors.json")); err != nil || string(b) != `{"app":3,"os":1}`+"\n" {
		t.Errorf("floors.json = %q, %v; want app 3, os 1", b, err)
	}
}

// TestUpdate_RejectsWrongPackageBytes: the metadata is right but the server (or a cache or
// network in front of it) serves other bytes at the target's URL.
func TestUpdate_RejectsWrongPackageBytes(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	upstream, err := url.Parse(w.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.Transport = w.srv.HTTPClient(t).Transport
	rp.ModifyResponse = func(r *http.Response) error {
		if !strings.Contains(r.Request.URL.Path, "/tuf/targets/") {
			return nil
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		r.Body.Close()
		body[len(body)/2] ^= 0x01 // same length, other bytes
		r.Body = io.NopCloser(bytes.NewReader(body))
		return nil
	}
	proxy := httptest.NewTLSServer(rp)
	t.Cleanup(proxy.Close)

	cfg := w.config(t.TempDir())
	cfg.TargetsURL = proxy.URL + "/api/v1/tenants/" + w.tenant + "/tuf/targets/"
	cfg.HTTPClient = w.deviceHTTPClient(proxy.Certificate())
	c, err := update.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(1)))
	if err != nil {
		t.Fatalf("Check = %v", err)
	}
	dst := filepath.Join(t.TempDir(), "app.img")
	if err := c.Download(t.Context(), plan.Images[0], dst); !errors.Is(err, blob.ErrDigestMismatch) {
		t.Fatalf("Download of swapped bytes = %v, want blob.ErrDigestMismatch", err)
	}
	for _, f := range []string{dst, dst + ".part"} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a refused download (%v)", f, err)
		}
	}
}

// TestUpdate_RejectsManifestMismatch: the signed custom metadata and the assignment agree on
// a security version that the package's own manifest does not state.
func TestUpdate_RejectsManifestMismatch(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 3)
	c := w.newClient(t.TempDir())
	plan, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(3)))
	if err != nil {
		t.Fatalf("Check = %v", err)
	}
	dst := filepath.Join(t.TempDir(), "app.img")
	if err := c.Download(t.Context(), plan.Images[0], dst); !errors.Is(err, update.ErrManifestMismatch) {
		t.Fatalf("Download = %v, want ErrManifestMismatch", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists after a refused download (%v)", dst, err)
	}
}

// TestNew_RejectsIncompleteConfig: every field is required; a zero one is an error, never a
// default (fail closed).
func TestNew_RejectsIncompleteConfig(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	breakers := map[string]func(*update.Config){
		"metadata url":        func(c *update.Config) { c.MetadataURL = "" },
		"plain http":          func(c *update.Config) { c.MetadataURL = strings.Replace(c.MetadataURL, "https:", "http:", 1) },
		"targets url":         func(c *update.Config) { c.TargetsURL = strings.TrimSuffix(c.TargetsURL, "/") },
		"root":                func(c *update.Config) { c.Root = nil },
		"malformed root":      func(c *update.Config) { c.Root = []byte(`{}`) },
		"director key":        func(c *update.Config) { c.DirectorKey = nil },
		"device id":           func(c *update.Config) { c.DeviceID = "" },
		"tenant id":           func(c *update.Config) { c.TenantID = "" },
		"state dir":           func(c *update.Config) { c.StateDir = "" },
		"http client":         func(c *update.Config) { c.HTTPClient = nil },
		"clock":               func(c *update.Config) { c.Now = nil },
		"download timeout":    func(c *update.Config) { c.FetchOptions.Timeout = 0 },
		"metadata size bound": func(c *update.Config) { c.MaxMetadataBytes = 0 },
	}
	if _, err := update.New(w.config(t.TempDir())); err != nil {
		t.Fatalf("New(valid config) = %v", err)
	}
	for name, breakIt := range breakers {
		cfg := w.config(t.TempDir())
		breakIt(&cfg)
		if _, err := update.New(cfg); err == nil {
			t.Errorf("New with no %s succeeded", name)
		}
	}
}

// TestDeps: the update client stays small enough for a device; it links no server-side
// package (STYLE, Layout).
func TestDeps(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, banned := range []string{"/internal/server", "/internal/api", "/internal/store", "/internal/cli", "/internal/repo", "/internal/testenv"} {
			if strings.HasPrefix(dep, "github.com/moat-iot/moat"+banned) {
				t.Errorf("update links %s", dep)
			}
		}
	}
}

// TestUpdate_RejectsAppOfAnotherProduct: an app the tenant signed for DW100 is refused by
// a device that is a WM200, whatever the director assigns (wrong software).
func TestUpdate_RejectsAppOfAnotherProduct(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	cfg := w.config(t.TempDir())
	cfg.Product = "WM200"
	c, err := update.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(1))); !errors.Is(err, update.ErrWrongProduct) {
		t.Fatalf("Check = %v, want update.ErrWrongProduct", err)
	}
	cfg.Product = "dw100" // product names compare case-insensitively, as the server's do
	if c, err = update.New(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(1))); err != nil {
		t.Fatalf("Check for its own product = %v", err)
	}
}
