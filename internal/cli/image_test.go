package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/image"
)

const exampleApp = "../../examples/dw100/app"

func TestImagePackage(t *testing.T) {
	t.Parallel()
	u := newUser(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "dw100-app.img")

	stdout := u.must("image", "package", exampleApp, "--out", out)
	pkg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pkg)
	r, err := image.Open(bytes.NewReader(pkg))
	if err != nil {
		t.Fatalf("image.Open(package written by the CLI) = %v", err)
	}
	m := r.Manifest()
	for _, want := range []string{"Name:", "dw100-app", "Kind:", "app", "Version:", m.Version, "Security version:",
		"Product:", "DW100", m.ComponentID, "SHA-256:", hex.EncodeToString(sum[:])} {
		if !strings.Contains(stdout, want) {
			t.Errorf("moat image package output lacks %q:\n%s", want, stdout)
		}
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("package file: %v, %v; want mode 0644", fi.Mode(), err)
	}

	// JSON prints the manifest unchanged; packing again gives the same bytes.
	out2 := filepath.Join(dir, "again.img")
	got := mustJSON[image.Manifest](u, "image", "package", "--out", out2, exampleApp)
	if diff := cmp.Diff(m, got); diff != "" {
		t.Errorf("moat image package -o json differs from the package's manifest (-package +printed):\n%s", diff)
	}
	if pkg2, err := os.ReadFile(out2); err != nil || !bytes.Equal(pkg, pkg2) {
		t.Errorf("packing the same directory twice gave different files (%v)", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("output directory holds %d files, want the 2 packages and no temporary file", len(entries))
	}

	// An OS image has no product.
	osOut := u.must("image", "package", "../../examples/dw100/os", "--out", filepath.Join(dir, "os.img"))
	for _, line := range strings.Split(osOut, "\n") {
		if f := strings.Fields(line); len(f) == 2 && (f[0] == "Kind:" && f[1] != "os" || f[0] == "Product:" && f[1] != "-") {
			t.Errorf("OS package output line %q, want kind os and no product", line)
		}
	}
}

func TestImagePackage_Errors(t *testing.T) {
	t.Parallel()
	u := newUser(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "x.img")

	u.want(ExitUsage, "image", "package", "--out", out)
	u.want(ExitUsage, "image", "package", exampleApp)
	u.want(ExitUsage, "image", "package", exampleApp, "extra", "--out", out)
	u.want(ExitUsage, "image", "package", exampleApp, "--out", out, "-o", "yaml")

	empty := t.TempDir()
	r := u.want(ExitError, "image", "package", empty, "--out", out)
	if !strings.Contains(r.stderr, "app.json") {
		t.Errorf("packing a directory without a manifest: stderr does not name app.json:\n%s", r.stderr)
	}

	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "app.json"), []byte(`{"format":1,"component_id":"x","name":"dw100-app","kind":"app",
		"version":"v1","security_version":1,"product":"DW100","app":{"entry_point":"/bin/sh","capabilities":{"gpio":[4,4]}}}`), 0o644)
	r = u.want(ExitError, "image", "package", bad, "--out", out)
	for _, field := range []string{"component_id", "version", "app.entry_point", "app.capabilities.gpio[1]"} {
		if !strings.Contains(r.stderr, field) {
			t.Errorf("invalid manifest: stderr does not name %s:\n%s", field, r.stderr)
		}
	}

	link := t.TempDir()
	os.WriteFile(filepath.Join(link, "os.json"), []byte(`{"format":1,"component_id":"9d2f4a61-7c3e-4e8b-b5a0-1e6c8f3d2b47",
		"name":"moat-os","kind":"os","version":"1.0.0","security_version":1}`), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(link, "passwd"))
	r = u.want(ExitError, "image", "package", link, "--out", out)
	if !strings.Contains(r.stderr, "passwd") || !strings.Contains(r.stderr, "hint:") {
		t.Errorf("symbolic link: stderr does not name the path and say what to do:\n%s", r.stderr)
	}

	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed runs left %d files in the output directory", len(entries))
	}
}
