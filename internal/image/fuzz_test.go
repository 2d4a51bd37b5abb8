package image_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/image"
)

var update = flag.Bool("update", false, "rewrite the seed corpora in testdata/fuzz")

// FuzzParseManifest: no panic; whatever parses is valid and is its own canonical encoding.
func FuzzParseManifest(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := image.ParseManifest(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("ParseManifest accepted an invalid manifest: %v", err)
		}
		c, err := json.Marshal(m)
		if err != nil || !bytes.Equal(c, b) {
			t.Fatalf("ParseManifest accepted %q, whose canonical encoding is %q (%v)", b, c, err)
		}
	})
}

// FuzzOpen reads the whole payload of whatever opens, then unpacks it with small limits:
// no panic, and nothing but regular files and directories written, all inside the target.
func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := image.Open(bytes.NewReader(b))
		if err != nil {
			return
		}
		m := r.Manifest()
		if c, err := json.Marshal(m); err != nil || !bytes.HasPrefix(b[16:], c) {
			t.Fatalf("Open accepted a manifest that does not re-encode to its bytes: %v", err)
		}
		n, err := io.Copy(io.Discard, r.Payload())
		if err == nil && n != m.Payload.Length {
			t.Fatalf("payload read without error is %d bytes, manifest declares %d", n, m.Payload.Length)
		}

		r, err = image.Open(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("second Open = %v, first succeeded", err)
		}
		base := t.TempDir()
		image.Unpack(t.Context(), r.Payload(), filepath.Join(base, "out"), 64<<10)
		for name := range readTree(t, base) {
			if name != "out" && !strings.HasPrefix(name, "out/") {
				t.Fatalf("Unpack wrote %s outside its directory", name)
			}
		}
	})
}

// FuzzUnpack feeds payloads straight to Unpack: FuzzOpen rarely gets past the payload's
// SHA-256, so this is what explores the zstd and tar readers. No panic, and nothing but
// regular files and directories written, all inside the target.
func FuzzUnpack(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte) {
		base := t.TempDir()
		image.Unpack(t.Context(), bytes.NewReader(payload), filepath.Join(base, "out"), 64<<10)
		for name := range readTree(t, base) {
			if name != "out" && !strings.HasPrefix(name, "out/") {
				t.Fatalf("Unpack wrote %s outside its directory", name)
			}
		}
	})
}

// seedApp is the tree packed into the FuzzOpen seed: small, with a directory, an
// executable and a file.
func seedApp() map[string]file {
	return map[string]file{
		"app.json":  {content: appSource, mode: 0o644},
		"bin":       {dir: true, mode: 0o755},
		"bin/dw100": {content: "#!/bin/sh\necho dw100\n", mode: 0o755},
		"etc":       {dir: true, mode: 0o755},
		"etc/conf":  {content: "eco=45\n", mode: 0o644},
	}
}

// seeds returns the seed corpora, by fuzz target and file name.
func seeds(t *testing.T) map[string]map[string][]byte {
	t.Helper()
	pkg, _ := packTree(t, seedApp())
	appManifest, _ := json.Marshal(validApp())
	osManifest, _ := json.Marshal(validOS())
	_, manifest, payload := sections(t, pkg)
	hostile := compress(t, makeTar(t, dir("bin/"),
		tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/sh", Linkname: "../../../bin/sh"}},
		reg("../escape", "x"), reg("/abs", "x")))
	m := validApp()
	return map[string]map[string][]byte{
		"FuzzParseManifest": {
			"app":           appManifest,
			"os":            osManifest,
			"packed":        manifest,
			"duplicate-key": bytes.Replace(appManifest, []byte(`"kind":"app",`), []byte(`"kind":"app","kind":"os",`), 1),
			"unknown-field": bytes.Replace(osManifest, []byte(`{"format":1,`), []byte(`{"format":1,"x":[1,{"y":null}],`), 1),
			"indented":      []byte(strings.ReplaceAll(string(osManifest), ",", ",\n  ")),
		},
		"FuzzOpen": {
			"packed-app":       pkg,
			"trailing-byte":    append(bytes.Clone(pkg), 0),
			"truncated":        pkg[:len(pkg)-5],
			"hostile-tar":      packageOf(t, m, hostile),
			"os-empty-tar":     packageOf(t, validOS(), compress(t, makeTar(t))),
			"payload-mismatch": assemble(image.Magic, image.FormatVersion, manifest, bytes.Repeat([]byte{0x28}, len(payload))),
		},
		"FuzzUnpack": {
			"packed-app":  payload,
			"hostile-tar": hostile,
			"empty-tar":   compress(t, makeTar(t)),
			"long-names": compress(t, makeTar(t, dir(strings.Repeat("d", 200)+"/"),
				reg(strings.Repeat("d", 200)+"/"+strings.Repeat("\u00e9", 100), "x"))),
			"duplicate": compress(t, makeTar(t, reg("a", "1"), reg("a", "2"))),
		},
	}
}

// TestSeedCorpora keeps testdata/fuzz in step with the code: the committed seeds must equal
// the generated ones, which also shows that Pack still produces the same bytes as when the
// seed was written. Rewrite them with 'go test ./internal/image -run TestSeedCorpora -update'
// after a deliberate format or compressor change.
func TestSeedCorpora(t *testing.T) {
	for target, files := range seeds(t) {
		for name, b := range files {
			p := filepath.Join("testdata", "fuzz", target, name)
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if *update {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("%v; run 'go test ./internal/image -run TestSeedCorpora -update'", err)
				continue
			}
			if diff := cmp.Diff(want, string(got)); diff != "" {
				t.Errorf("%s differs from the generated seed; if the format or the compressor changed on purpose, run 'go test ./internal/image -run TestSeedCorpora -update' (-generated +file):\n%s", p, diff)
			}
		}
	}
}
