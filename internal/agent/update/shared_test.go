package update_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/image"
)

// sharedConfig is a device's update configuration with memory state and the shared
// repository r.
func (w *world) sharedConfig(r *update.Repository, device string) update.Config {
	cfg := w.config("")
	cfg.StateDir, cfg.Memory, cfg.Repository, cfg.DeviceID = "", update.NewMemoryState(), r, device
	return cfg
}

func (w *world) repository(maxAge time.Duration) *update.Repository {
	w.t.Helper()
	cfg := w.config("")
	r, err := update.NewRepository(update.RepositoryConfig{MetadataURL: cfg.MetadataURL, TargetsURL: cfg.TargetsURL, Root: w.root,
		Dir: filepath.Join(w.t.TempDir(), "tuf"), MaxMetadataBytes: 1 << 20, MaxAge: maxAge})
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

func (w *world) sharedClient(r *update.Repository, device string) *update.Client {
	w.t.Helper()
	c, err := update.New(w.sharedConfig(r, device))
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// TestShared_InstallsAssignedImage: two devices share one verified view; each checks its own
// assignment, downloads and verifies the image in memory, and commits its own floor.
func TestShared_InstallsAssignedImage(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	r := w.repository(time.Hour)
	for _, dev := range []string{"dw100-0001", "dw100-0002"} {
		c := w.sharedClient(r, dev)
		plan, err := c.Check(t.Context(), w.assign(dev, 1, p.image(1)))
		if err != nil {
			t.Fatalf("%s: Check = %v", dev, err)
		}
		if len(plan.Images) != 1 || plan.Images[0].SHA256 != p.sha {
			t.Fatalf("%s: plan = %+v, want %s", dev, plan, p.path)
		}
		if err := c.DownloadDiscard(t.Context(), plan.Images[0]); err != nil {
			t.Fatalf("%s: DownloadDiscard = %v", dev, err)
		}
		if err := c.Commit(director.KindApp, 1); err != nil {
			t.Fatalf("%s: Commit = %v", dev, err)
		}
	}
}

// TestShared_RejectsReplayedAssignment: the counter is per device even in memory; another
// device's acceptance of the same counter does not matter.
func TestShared_RejectsReplayedAssignment(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	r := w.repository(time.Hour)
	c := w.sharedClient(r, deviceID)
	old := w.assign(deviceID, 1, p.image(1))
	if _, err := c.Check(t.Context(), old); err != nil {
		t.Fatalf("Check = %v", err)
	}
	if _, err := c.Check(t.Context(), w.assign(deviceID, 2, p.image(1))); err != nil {
		t.Fatalf("Check of counter 2 = %v", err)
	}
	if _, err := c.Check(t.Context(), old); !errors.Is(err, director.ErrReplayed) {
		t.Fatalf("Check of the replayed counter 1 = %v, want director.ErrReplayed", err)
	}
	if _, err := c.Check(t.Context(), w.assign("dw100-other", 3, p.image(1))); !errors.Is(err, director.ErrWrongDevice) {
		t.Fatalf("Check of another device's assignment = %v, want director.ErrWrongDevice", err)
	}
}

// TestShared_RejectsDirectorOnlyCompromise: a path the shared view does not list makes it
// refresh, and a path the repository does not list after the refresh is refused, as on a
// device with its own view.
func TestShared_RejectsDirectorOnlyCompromise(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 1)
	unlisted := w.upload("6.6.6", 1)
	r := w.repository(time.Hour)
	c := w.sharedClient(r, deviceID)
	if _, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(1))); err != nil {
		t.Fatalf("Check = %v", err)
	}
	if _, err := c.Check(t.Context(), w.assign(deviceID, 2, unlisted.image(1))); !errors.Is(err, director.ErrRepoMismatch) {
		t.Fatalf("Check of an unlisted image = %v, want director.ErrRepoMismatch", err)
	}
	forged := p.image(1)
	forged.SHA256 = unlisted.sha
	if _, err := c.Check(t.Context(), w.assign(deviceID, 3, forged)); !errors.Is(err, director.ErrRepoMismatch) {
		t.Fatalf("Check of other bytes under a listed path = %v, want director.ErrRepoMismatch", err)
	}
}

// TestShared_SeesNewPublication: a view cached for an hour is refreshed at once when an
// assignment names an image published after it.
func TestShared_SeesNewPublication(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p1 := w.upload("1.0.0", 1)
	w.publish(p1, 1)
	r := w.repository(time.Hour)
	c := w.sharedClient(r, deviceID)
	if _, err := c.Check(t.Context(), w.assign(deviceID, 1, p1.image(1))); err != nil {
		t.Fatalf("Check = %v", err)
	}
	p2 := w.upload("2.0.0", 2)
	w.publish(p2, 2)
	if _, err := c.Check(t.Context(), w.assign(deviceID, 2, p2.image(2))); err != nil {
		t.Fatalf("Check of the new publication = %v", err)
	}
}

// TestDownloadDiscard_RejectsWrongPackageBytes: bytes swapped on the way fail the
// in-memory download as they fail Download.
func TestDownloadDiscard_RejectsWrongPackageBytes(t *testing.T) {
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
		body[len(body)-1] ^= 0x01 // same length, other bytes, past the manifest
		r.Body = io.NopCloser(bytes.NewReader(body))
		return nil
	}
	proxy := httptest.NewTLSServer(rp)
	t.Cleanup(proxy.Close)
	r := w.repository(time.Hour)
	cfg := w.sharedConfig(r, deviceID)
	cfg.HTTPClient = w.deviceHTTPClient(proxy.Certificate())
	c, err := update.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(1)))
	if err != nil {
		t.Fatalf("Check = %v", err)
	}
	plan.Images[0].URL = strings.Replace(plan.Images[0].URL, w.srv.URL, proxy.URL, 1)
	// The package reader may see its payload hash fail before the blob's digest does.
	if err := c.DownloadDiscard(t.Context(), plan.Images[0]); !errors.Is(err, blob.ErrDigestMismatch) && !errors.Is(err, image.ErrPayloadMismatch) {
		t.Fatalf("DownloadDiscard of swapped bytes = %v, want blob.ErrDigestMismatch or image.ErrPayloadMismatch", err)
	}
}

// TestDownloadDiscard_RejectsManifestMismatch: the package's manifest states another
// security version than the signed metadata and the assignment.
func TestDownloadDiscard_RejectsManifestMismatch(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p := w.upload("1.0.0", 1)
	w.publish(p, 3)
	c := w.sharedClient(w.repository(time.Hour), deviceID)
	plan, err := c.Check(t.Context(), w.assign(deviceID, 1, p.image(3)))
	if err != nil {
		t.Fatalf("Check = %v", err)
	}
	if err := c.DownloadDiscard(t.Context(), plan.Images[0]); !errors.Is(err, update.ErrManifestMismatch) {
		t.Fatalf("DownloadDiscard = %v, want ErrManifestMismatch", err)
	}
}

// TestNew_MemoryNeedsRepository: memory state without a shared repository would have no
// place for the TUF metadata; both a state directory and memory is ambiguous.
func TestNew_MemoryNeedsRepository(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cfg := w.config("")
	cfg.Memory = update.NewMemoryState()
	if _, err := update.New(cfg); err == nil {
		t.Error("New with memory and no repository = nil error")
	}
	cfg = w.sharedConfig(w.repository(0), deviceID)
	cfg.StateDir = t.TempDir()
	if _, err := update.New(cfg); err == nil {
		t.Error("New with memory and a state directory = nil error")
	}
}
