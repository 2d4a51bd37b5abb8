package image_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/problem"
)

func TestPack_RoundTrip(t *testing.T) {
	t.Parallel()
	tree := appTree()
	pkg, packed := packTree(t, tree)

	r, err := image.Open(bytes.NewReader(pkg))
	if err != nil {
		t.Fatalf("Open(packed) = %v", err)
	}
	if diff := cmp.Diff(packed, r.Manifest()); diff != "" {
		t.Errorf("Open(packed).Manifest() differs from Pack's (-pack +open):\n%s", diff)
	}
	_, _, payload := sections(t, pkg)
	sum := sha256.Sum256(payload)
	want := validApp()
	want.Payload = image.Payload{SHA256: hex.EncodeToString(sum[:]), Length: int64(len(payload)), Compression: "zstd", Format: "tar"}
	if diff := cmp.Diff(want, packed); diff != "" {
		t.Errorf("Pack manifest (-want +got):\n%s", diff)
	}

	out := filepath.Join(t.TempDir(), "out")
	if err := image.Unpack(t.Context(), r.Payload(), out, 1<<20); err != nil {
		t.Fatalf("Unpack = %v", err)
	}
	delete(tree, "app.json")
	if diff := cmp.Diff(tree, readTree(t, out), cmp.AllowUnexported(file{})); diff != "" {
		t.Errorf("unpacked tree differs from the source (-source +unpacked):\n%s", diff)
	}
}

// TestPack_NormalizesModes checks that only the execute bit survives: 0600 becomes 0644,
// 0700 and 0750 become 0755.
func TestPack_NormalizesModes(t *testing.T) {
	t.Parallel()
	tree := appTree()
	tree["bin/dw100"] = file{content: "#!/bin/sh\n", mode: 0o700}
	tree["etc/cycles.conf"] = file{content: "x", mode: 0o600}
	tree["etc/tool"] = file{content: "y", mode: 0o750}
	tree["etc/empty"] = file{dir: true, mode: 0o700}
	pkg, _ := packTree(t, tree)
	r, err := image.Open(bytes.NewReader(pkg))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := image.Unpack(t.Context(), r.Payload(), out, 1<<20); err != nil {
		t.Fatal(err)
	}
	got := readTree(t, out)
	for name, want := range map[string]os.FileMode{"bin/dw100": 0o755, "etc/cycles.conf": 0o644, "etc/tool": 0o755, "etc/empty": 0o755} {
		if got[name].mode != want {
			t.Errorf("mode of %s = %v, want %v", name, got[name].mode, want)
		}
	}
}

// TestPack_Deterministic packs the same content at two paths, with different times, umask
// leftovers and creation order, and wants the same bytes.
func TestPack_Deterministic(t *testing.T) {
	t.Parallel()
	tree := appTree()
	a, _ := packTree(t, tree)

	dir := t.TempDir()
	writeTree(t, dir, tree)
	// Other times, other non-execute permission bits.
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	os.Chmod(filepath.Join(dir, "README"), 0o600)
	os.Chmod(filepath.Join(dir, "bin", "dw100"), 0o700)
	var b bytes.Buffer
	if _, err := image.Pack(t.Context(), dir, &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b.Bytes()) {
		t.Errorf("Pack of the same content at another path, with other times, gave other bytes (%d vs %d bytes)", len(a), b.Len())
	}
	// Again from the same directory, after touching every file.
	now := time.Now()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error { return os.Chtimes(p, now, now) })
	var c bytes.Buffer
	if _, err := image.Pack(t.Context(), dir, &c); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, c.Bytes()) {
		t.Error("Pack after touching every file gave other bytes")
	}

	// A content change changes the bytes.
	os.WriteFile(filepath.Join(dir, "README"), []byte("changed"), 0o644)
	var d bytes.Buffer
	if _, err := image.Pack(t.Context(), dir, &d); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, d.Bytes()) {
		t.Error("Pack after changing a file gave the same bytes")
	}
}

func TestPack_RefusesSpecialFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		make func(dir string) error
		path string
	}{
		{"symlink to a file", func(dir string) error { return os.Symlink("dw100", filepath.Join(dir, "bin", "link")) }, "bin/link"},
		{"symlink outside", func(dir string) error { return os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")) }, "passwd"},
		{"symlink to a directory", func(dir string) error { return os.Symlink("bin", filepath.Join(dir, "bin2")) }, "bin2"},
		{"named pipe", func(dir string) error { return syscall.Mkfifo(filepath.Join(dir, "etc", "fifo"), 0o644) }, "etc/fifo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeTree(t, dir, appTree())
			if err := tc.make(dir); err != nil {
				t.Skipf("cannot make a %s here: %v", tc.name, err)
			}
			var buf bytes.Buffer
			_, err := image.Pack(t.Context(), dir, &buf)
			if !errors.Is(err, image.ErrUnsafePath) {
				t.Fatalf("Pack with a %s = %v, want ErrUnsafePath", tc.name, err)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("Pack error %q does not name %s", err, tc.path)
			}
			if buf.Len() != 0 {
				t.Errorf("Pack wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

// TestPack_StrictSource checks that app.json and os.json are decoded strictly and checked
// before anything is written.
func TestPack_StrictSource(t *testing.T) {
	t.Parallel()
	osSource := `{"format":1,"component_id":"0f8fad5b-d9cb-469f-a165-70867728950e","name":"moat-os","kind":"os","version":"1.0.0","security_version":1}`
	for _, tc := range []struct {
		name  string
		files map[string]string // replaces app.json when given
		want  error
		field string // a field the validation problem names
	}{
		{"no manifest", map[string]string{}, nil, ""},
		{"both manifests", map[string]string{"app.json": appSource, "os.json": osSource}, nil, ""},
		{"unknown field", map[string]string{"app.json": strings.Replace(appSource, `"format": 1,`, `"format": 1, "signature": "x",`, 1)}, image.ErrInvalidManifest, ""},
		{"payload section given", map[string]string{"app.json": strings.Replace(appSource, `"format": 1,`, `"format": 1, "payload": {},`, 1)}, image.ErrInvalidManifest, ""},
		{"trailing data", map[string]string{"app.json": appSource + "{}"}, image.ErrInvalidManifest, ""},
		{"not JSON", map[string]string{"app.json": "name: dw100"}, image.ErrInvalidManifest, ""},
		{"missing security version", map[string]string{"app.json": strings.Replace(appSource, `"security_version": 3,`, ``, 1)}, image.ErrInvalidManifest, "security_version"},
		{"missing format", map[string]string{"app.json": strings.Replace(appSource, `"format": 1,`, ``, 1)}, image.ErrInvalidManifest, "format"},
		{"app kind in os.json", map[string]string{"os.json": appSource}, image.ErrInvalidManifest, "kind"},
		{"os kind in app.json", map[string]string{"app.json": osSource}, image.ErrInvalidManifest, "kind"},
		{"entry point missing", map[string]string{"app.json": strings.Replace(appSource, "bin/dw100", "bin/nope", 1)}, image.ErrInvalidManifest, ""},
		{"entry point a directory", map[string]string{"app.json": strings.Replace(appSource, `"bin/dw100"`, `"bin"`, 1)}, image.ErrInvalidManifest, ""},
		{"bad version", map[string]string{"app.json": strings.Replace(appSource, `"1.2.0"`, `"v1.2"`, 1)}, image.ErrInvalidManifest, "version"},
		{"manifest too large", map[string]string{"app.json": strings.Replace(appSource, `"format": 1,`, `"format": 1,`+strings.Repeat(" ", image.MaxManifestBytes), 1)}, image.ErrTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tree := appTree()
			delete(tree, "app.json")
			for name, content := range tc.files {
				tree[name] = file{content: content, mode: 0o644}
			}
			dir := t.TempDir()
			writeTree(t, dir, tree)
			var buf bytes.Buffer
			_, err := image.Pack(t.Context(), dir, &buf)
			if err == nil {
				t.Fatal("Pack = nil error, want one")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Pack = %v, want %v", err, tc.want)
			}
			if tc.field != "" {
				p, ok := errors.AsType[*problem.Error](err)
				if !ok {
					t.Fatalf("Pack = %v, want a validation problem naming %s", err, tc.field)
				}
				var fields []string
				for _, f := range p.Fields {
					fields = append(fields, f.Field)
				}
				if !strings.Contains(strings.Join(fields, " "), tc.field) {
					t.Errorf("Pack problem names %v, want %s among them", fields, tc.field)
				}
			}
			if buf.Len() != 0 {
				t.Errorf("Pack wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

func TestPack_CancelledContext(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTree(t, dir, appTree())
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := image.Pack(ctx, dir, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("Pack(cancelled) = %v, want context.Canceled", err)
	}
}

// TestPack_Examples packs the example images that the demo publishes.
func TestPack_Examples(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dir  string
		kind image.Kind
	}{
		{"../../examples/dw100/app", image.KindApp},
		{"../../examples/dw100/os", image.KindOS},
	} {
		t.Run(filepath.Base(tc.dir), func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			m, err := image.Pack(t.Context(), tc.dir, &buf)
			if err != nil {
				t.Fatalf("Pack(%s) = %v", tc.dir, err)
			}
			if m.Kind != tc.kind {
				t.Errorf("Pack(%s).Kind = %q, want %q", tc.dir, m.Kind, tc.kind)
			}
			if _, err := readAll(buf.Bytes()); err != nil {
				t.Errorf("reading the package of %s: %v", tc.dir, err)
			}
		})
	}
}
