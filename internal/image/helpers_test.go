package image_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/moat-iot/moat/internal/image"
)

const testComponentID = "6f1c3c1e-8a8e-4b7e-9a31-0f6d2c1b5a77"

// appSource is a valid app.json.
const appSource = `{
  "format": 1,
  "component_id": "6f1c3c1e-8a8e-4b7e-9a31-0f6d2c1b5a77",
  "name": "dw100-app",
  "kind": "app",
  "version": "1.2.0",
  "security_version": 3,
  "product": "DW100",
  "app": {
    "entry_point": "bin/dw100",
    "capabilities": {
      "allowed_hosts": ["telemetry.contoso.example:8883"],
      "gpio": [4, 17],
      "adc": [0, 1, 2]
    }
  }
}
`

// file is one entry of a test tree: a directory when dir is set.
type file struct {
	content string
	mode    fs.FileMode
	dir     bool
}

// appTree is a small application directory.
func appTree() map[string]file {
	return map[string]file{
		"app.json":               {content: appSource, mode: 0o644},
		"bin":                    {dir: true, mode: 0o755},
		"bin/dw100":              {content: "#!/bin/sh\necho dw100\n", mode: 0o755},
		"etc":                    {dir: true, mode: 0o755},
		"etc/cycles.conf":        {content: "eco=45\nintensive=70\n", mode: 0o644},
		"etc/empty":              {dir: true, mode: 0o755},
		"README":                 {content: strings.Repeat("the DW100 application\n", 50), mode: 0o644},
		"share":                  {dir: true, mode: 0o755},
		"share/a.b":              {content: "", mode: 0o644},
		"share/a":                {dir: true, mode: 0o755},
		"share/a/z":              {content: "z", mode: 0o644},
		"share/\u00fcml\u00e4ut": {content: "non-ASCII name", mode: 0o644},
	}
}

// writeTree creates tree under dir with the given modes.
func writeTree(t testing.TB, dir string, tree map[string]file) {
	t.Helper()
	for name, f := range tree {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if f.dir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(f.content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Modes last, once every parent exists.
	for name, f := range tree {
		if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(name)), f.mode); err != nil {
			t.Fatal(err)
		}
	}
}

// readTree reads every file and directory under dir, with normalized permissions.
func readTree(t testing.TB, dir string) map[string]file {
	t.Helper()
	tree := map[string]file{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		f := file{mode: fi.Mode().Perm(), dir: d.IsDir()}
		if !fi.Mode().IsRegular() && !d.IsDir() {
			t.Errorf("%s has type %v, want a regular file or directory", rel, fi.Mode().Type())
			return nil
		}
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			f.content = string(b)
		}
		tree[filepath.ToSlash(rel)] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// packTree packs tree and returns the package bytes and manifest.
func packTree(t testing.TB, tree map[string]file) ([]byte, image.Manifest) {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, tree)
	var buf bytes.Buffer
	m, err := image.Pack(t.Context(), dir, &buf)
	if err != nil {
		t.Fatalf("Pack(%s) = %v", dir, err)
	}
	return buf.Bytes(), m
}

// tarEntry is one entry of a hand-made tar.
type tarEntry struct {
	hdr     tar.Header
	content string
}

// makeTar builds a tar from entries, exactly as given (no checks).
func makeTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == 0 {
			h.Size = int64(len(e.content))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, e.content); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t testing.TB, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

// assemble builds a package from its sections as given.
func assemble(magic string, version uint32, manifest, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteString(magic)
	binary.Write(&b, binary.BigEndian, version)
	binary.Write(&b, binary.BigEndian, uint32(len(manifest)))
	b.Write(manifest)
	b.Write(payload)
	return b.Bytes()
}

// packageOf builds a valid package around payload, with m's payload section filled in.
func packageOf(t testing.TB, m image.Manifest, payload []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(payload)
	m.Payload = image.Payload{SHA256: hex.EncodeToString(sum[:]), Length: int64(len(payload)),
		Compression: image.CompressionZstd, Format: image.PayloadTar}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return assemble(image.Magic, image.FormatVersion, mb, payload)
}

// validApp is a valid app manifest (payload section left for the caller).
func validApp() image.Manifest {
	return image.Manifest{
		Format: 1, ComponentID: testComponentID, Name: "dw100-app", Kind: image.KindApp,
		Version: "1.2.0", SecurityVersion: 3, Product: "DW100",
		App: &image.App{EntryPoint: "bin/dw100", Capabilities: image.Capabilities{
			AllowedHosts: []string{"telemetry.contoso.example:8883"}, GPIO: []int{4, 17}, ADC: []int{0, 1, 2}}},
		Payload: image.Payload{SHA256: strings.Repeat("ab", 32), Length: 10, Compression: "zstd", Format: "tar"},
	}
}

func validOS() image.Manifest {
	return image.Manifest{
		Format: 1, ComponentID: "0f8fad5b-d9cb-469f-a165-70867728950e", Name: "moat-os", Kind: image.KindOS,
		Version: "24.10.0", SecurityVersion: 7,
		Payload: image.Payload{SHA256: strings.Repeat("cd", 32), Length: 10, Compression: "zstd", Format: "tar"},
	}
}

// sections splits a package into header, manifest and payload.
func sections(t testing.TB, pkg []byte) (header, manifest, payload []byte) {
	t.Helper()
	n := binary.BigEndian.Uint32(pkg[12:16])
	return pkg[:16], pkg[16 : 16+n], pkg[16+n:]
}

// readAll opens pkg and reads its whole payload, returning the first error.
func readAll(pkg []byte) (image.Manifest, error) {
	r, err := image.Open(bytes.NewReader(pkg))
	if err != nil {
		return image.Manifest{}, err
	}
	if _, err := io.Copy(io.Discard, r.Payload()); err != nil {
		return r.Manifest(), err
	}
	return r.Manifest(), nil
}
