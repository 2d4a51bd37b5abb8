package boot_test

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/image"
)

var update = flag.Bool("update", false, "rewrite the seed corpora in testdata/fuzz and testdata/pinned-root.json")

// FuzzReadRecord: no panic; whatever parses is valid, and re-encodes to a record that
// parses to the same value.
func FuzzReadRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := boot.ParseRecord(b)
		if err != nil {
			if !errors.Is(err, boot.ErrCorruptRecord) {
				t.Fatalf("ParseRecord error %v does not wrap ErrCorruptRecord", err)
			}
			return
		}
		if err := rec.Validate(); err != nil {
			t.Fatalf("ParseRecord accepted an invalid record: %v", err)
		}
		c, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		again, err := boot.ParseRecord(c)
		if err != nil {
			t.Fatalf("ParseRecord(%q) = %v; it parsed as %q", c, err, b)
		}
		if diff := cmp.Diff(rec, again); diff != "" {
			t.Fatalf("record changed when re-encoded (-first +again):\n%s", diff)
		}
	})
}

// FuzzVerifyBundle feeds bundle.json bytes to Verify's metadata checks, for both kinds,
// against the pinned root the seeds were signed under: no panic, and what verifies names a
// target of its kind with a SHA-256 and a length. The seeds are a few KiB, so minimizing a
// new input takes long: fuzz with -fuzzminimizetime=2s.
func FuzzVerifyBundle(f *testing.F) {
	pinned, err := os.ReadFile(filepath.Join("testdata", "pinned-root.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, kind := range []image.Kind{image.KindOS, image.KindApp} {
			p, sha, length, v, err := boot.VerifyBundle(pinned, b, kind, boot.Installed{})
			if err != nil {
				continue
			}
			prefix := map[image.Kind]string{image.KindOS: "os/", image.KindApp: "apps/"}[kind]
			if !strings.HasPrefix(p, prefix) || len(sha) != 64 || length < 0 || v.Root < 1 || v.Targets < 1 {
				t.Fatalf("VerifyBundle(%s) accepted path %q sha256 %q length %d versions %+v", kind, p, sha, length, v)
			}
		}
	})
}

// recordSeeds are FuzzReadRecord's seeds.
func recordSeeds(t *testing.T) map[string][]byte {
	t.Helper()
	good, err := json.Marshal(goodRecord())
	must(t, err)
	empty, err := json.Marshal(boot.Record{Format: boot.RecordFormat})
	must(t, err)
	return map[string][]byte{
		"good":          good,
		"empty":         empty,
		"truncated":     good[:len(good)/2],
		"unknown-field": []byte(strings.Replace(string(good), `"format":1`, `"format":1,"x":[1,{"y":null}]`, 1)),
		"pending-twice": []byte(strings.Replace(string(good), `"pending":"b"`, `"pending":"a"`, 1)),
	}
}

// bundleSeeds are FuzzVerifyBundle's seeds, signed by a new repository whose first root
// they return; the valid ones verify for their kind.
func bundleSeeds(t *testing.T) (pinned []byte, seeds map[string][]byte) {
	t.Helper()
	r := newRepo(t)
	r.rotateRoot()
	r.rotateRoot()
	osImg := r.pack(image.KindOS, "moat-os", "1.0.0", 1)
	app := r.pack(image.KindApp, "dw100-app", "1.0.0", 1)
	r.publish(osImg)
	b := r.publish(app)
	enc := func(p string, b boot.Bundle) []byte {
		raw, err := boot.EncodeBundle(p, b)
		must(t, err)
		return raw
	}
	foreign := b
	foreign.Targets = foreignTargets(t, r)
	skip := b
	skip.Roots = b.Roots[1:]
	return r.root, map[string][]byte{
		"valid-os":        enc(osImg.path, b),
		"valid-app":       enc(app.path, b),
		"foreign-targets": enc(osImg.path, foreign),
		"roots-skip":      enc(app.path, skip),
		"app-as-os-path":  enc("os/dw100-app/1.0.0", b),
		"no-apps":         enc(app.path, boot.Bundle{Roots: b.Roots, Targets: b.Targets}),
	}
}

// TestSeedCorpora keeps testdata/fuzz in step with the code. FuzzReadRecord's seeds must
// equal the generated ones. FuzzVerifyBundle's are signed with keys made when they were
// written, so they are checked instead: the valid ones verify under testdata/pinned-root.json
// and the others do not. Rewrite both with
// 'go test ./internal/agent/boot -run TestSeedCorpora -update'.
func TestSeedCorpora(t *testing.T) {
	write := func(p string, b []byte) {
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, b, 0o644))
	}
	corpus := func(b []byte) []byte {
		return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
	}
	for name, b := range recordSeeds(t) {
		p := filepath.Join("testdata", "fuzz", "FuzzReadRecord", name)
		if *update {
			write(p, corpus(b))
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%v; run 'go test ./internal/agent/boot -run TestSeedCorpora -update'", err)
			continue
		}
		if diff := cmp.Diff(string(corpus(b)), string(got)); diff != "" {
			t.Errorf("%s differs from the generated seed (-generated +file):\n%s", p, diff)
		}
	}

	rootFile := filepath.Join("testdata", "pinned-root.json")
	if *update {
		pinned, seeds := bundleSeeds(t)
		write(rootFile, pinned)
		for name, b := range seeds {
			write(filepath.Join("testdata", "fuzz", "FuzzVerifyBundle", name), corpus(b))
		}
		return
	}
	pinned, err := os.ReadFile(rootFile)
	must(t, err)
	dir := filepath.Join("testdata", "fuzz", "FuzzVerifyBundle")
	entries, err := os.ReadDir(dir)
	must(t, err)
	if len(entries) == 0 {
		t.Fatalf("%s is empty", dir)
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		must(t, err)
		lines := strings.SplitN(string(raw), "\n", 3)
		if len(lines) < 2 || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s is not a fuzz corpus file", e.Name())
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		must(t, err)
		kind := image.KindOS
		if strings.HasSuffix(e.Name(), "-app") {
			kind = image.KindApp
		}
		_, _, _, _, err = boot.VerifyBundle(pinned, []byte(s), kind, boot.Installed{})
		if valid := strings.HasPrefix(e.Name(), "valid-"); valid != (err == nil) {
			t.Errorf("VerifyBundle(seed %s, %s) = %v, want valid %v", e.Name(), kind, err, valid)
		}
	}
}
