package image_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/image"
)

// TestOpen_RejectsBitFlips flips every bit of a package in turn (ATTACKS row 22). A flip in
// the header or the payload is always refused; a flip in the manifest is refused unless it
// yields another valid manifest, which the TUF metadata then refuses by the file's hash: the
// test checks that such a manifest differs, so no flip goes unseen.
func TestOpen_RejectsBitFlips(t *testing.T) {
	t.Parallel()
	pkg, want := packTree(t, appTree())
	header, manifest, _ := sections(t, pkg)
	sectionOf := func(i int) string {
		switch {
		case i < len(header):
			return "header"
		case i < len(header)+len(manifest):
			return "manifest"
		}
		return "payload"
	}
	counts := map[string]int{}
	for i := range pkg {
		for bit := range 8 {
			flipped := slices.Clone(pkg)
			flipped[i] ^= 1 << bit
			got, err := readAll(flipped)
			section := sectionOf(i)
			if err == nil {
				if section == "manifest" && !cmp.Equal(got, want) {
					counts["manifest changed, still valid"]++
					continue
				}
				t.Fatalf("readAll(bit %d of byte %d flipped, %s) = nil error and an unchanged manifest", bit, i, section)
			}
			counts[section+" refused"]++
			if section == "payload" && !errors.Is(err, image.ErrPayloadMismatch) {
				t.Errorf("readAll(bit %d of payload byte %d flipped) = %v, want ErrPayloadMismatch", bit, i-len(header)-len(manifest), err)
			}
		}
	}
	t.Logf("bit flips: %v", counts)
}

// TestOpen_Sentinels crafts one file per sentinel.
func TestOpen_Sentinels(t *testing.T) {
	t.Parallel()
	pkg, _ := packTree(t, appTree())
	_, manifest, payload := sections(t, pkg)
	withManifest := func(mb []byte) []byte { return assemble(image.Magic, 1, mb, payload) }
	setVersion := func(v uint32) []byte {
		b := slices.Clone(pkg)
		binary.BigEndian.PutUint32(b[8:12], v)
		return b
	}
	for _, tc := range []struct {
		name string
		pkg  []byte
		want error
	}{
		{"empty file", nil, image.ErrTruncated},
		{"other magic", append([]byte("MOATIMG\x01"), pkg[8:]...), image.ErrBadMagic},
		{"zip file", append([]byte("PK\x03\x04\x14\x00\x00\x00"), pkg[8:]...), image.ErrBadMagic},
		{"format 0", setVersion(0), image.ErrUnsupportedVersion},
		{"format 2", setVersion(2), image.ErrUnsupportedVersion},
		{"manifest too large", assemble(image.Magic, 1, bytes.Repeat([]byte(" "), image.MaxManifestBytes+1), payload), image.ErrTooLarge},
		{"manifest length 2^32-1", func() []byte {
			b := slices.Clone(pkg)
			binary.BigEndian.PutUint32(b[12:16], ^uint32(0))
			return b
		}(), image.ErrTooLarge},
		{"duplicate key", withManifest(bytes.Replace(manifest, []byte(`"name":"dw100-app",`), []byte(`"name":"dw100-app","name":"evil-app",`), 1)), image.ErrNotCanonical},
		{"duplicate key, first wins for other parsers", withManifest(bytes.Replace(manifest, []byte(`"security_version":3,`), []byte(`"security_version":0,"security_version":3,`), 1)), image.ErrNotCanonical},
		{"unknown field", withManifest(bytes.Replace(manifest, []byte(`{"format":1,`), []byte(`{"format":1,"signature":"AAAA",`), 1)), image.ErrNotCanonical},
		{"unknown capability", withManifest(bytes.Replace(manifest, []byte(`"gpio":`), []byte(`"spi":["ISU1"],"gpio":`), 1)), image.ErrNotCanonical},
		{"reordered keys", withManifest(bytes.Replace(manifest, []byte(`"format":1,"component_id":"`+testComponentID+`"`), []byte(`"component_id":"`+testComponentID+`","format":1`), 1)), image.ErrNotCanonical},
		{"white space", withManifest(bytes.Replace(manifest, []byte(`,`), []byte(`, `), 1)), image.ErrNotCanonical},
		{"trailing newline", withManifest(append(slices.Clone(manifest), '\n')), image.ErrNotCanonical},
		{"escaped character", withManifest(bytes.Replace(manifest, []byte(`"dw100-app"`), []byte(`"dw100\u002dapp"`), 1)), image.ErrNotCanonical},
		{"number as float", withManifest(bytes.Replace(manifest, []byte(`"format":1,`), []byte(`"format":1.0,`), 1)), image.ErrInvalidManifest},
		{"explicit null app", func() []byte {
			m := validOS()
			mb, _ := json.Marshal(m)
			return withManifest(bytes.Replace(mb, []byte(`"security_version":7,`), []byte(`"security_version":7,"app":null,`), 1))
		}(), image.ErrNotCanonical},
		{"empty list", withManifest(bytes.Replace(manifest, []byte(`"gpio":`), []byte(`"uart":[],"gpio":`), 1)), image.ErrNotCanonical},
		{"not JSON", withManifest([]byte("format: 1")), image.ErrInvalidManifest},
		{"empty manifest", withManifest(nil), image.ErrInvalidManifest},
		{"invalid field", withManifest(bytes.Replace(manifest, []byte(`"kind":"app"`), []byte(`"kind":"bin"`), 1)), image.ErrInvalidManifest},
		{"negative security version", withManifest(bytes.Replace(manifest, []byte(`"security_version":3`), []byte(`"security_version":-3`), 1)), image.ErrInvalidManifest},
		{"payload one byte short", pkg[:len(pkg)-1], image.ErrTruncated},
		{"one byte appended", append(slices.Clone(pkg), 0), image.ErrTrailingData},
		{"another package appended", append(slices.Clone(pkg), pkg...), image.ErrTrailingData},
		{"payload replaced", assemble(image.Magic, 1, manifest, bytes.Repeat([]byte{0}, len(payload))), image.ErrPayloadMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := readAll(tc.pkg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("readAll = %v, want %v", err, tc.want)
			}
			if msg := err.Error(); msg != strings.ToLower(msg[:1])+msg[1:] || strings.Contains(msg, "failed to") {
				t.Errorf("error %q: want lower case, no \"failed to\"", msg)
			}
		})
	}
}

// TestOpen_RejectsDuplicateKey is the attack of ATTACKS row 22 on the manifest: a second
// "security_version" or "product" that another JSON parser (first key wins) would read.
func TestOpen_RejectsDuplicateKey(t *testing.T) {
	t.Parallel()
	pkg, _ := packTree(t, appTree())
	_, manifest, payload := sections(t, pkg)
	for _, dup := range []string{`"security_version":99,`, `"product":"OtherProduct",`, `"kind":"os",`, `"app":{"entry_point":"x","capabilities":{}},`} {
		mb := bytes.Replace(manifest, []byte(`{"format":1,`), []byte(`{"format":1,`+dup), 1)
		if _, err := readAll(assemble(image.Magic, 1, mb, payload)); !errors.Is(err, image.ErrNotCanonical) {
			t.Errorf("manifest with leading duplicate %s: readAll = %v, want ErrNotCanonical", dup, err)
		}
	}
}

// TestOpen_TruncatedEverywhere cuts the file at every byte, section boundaries included.
func TestOpen_TruncatedEverywhere(t *testing.T) {
	t.Parallel()
	pkg, _ := packTree(t, appTree())
	for n := range len(pkg) {
		if _, err := readAll(pkg[:n]); !errors.Is(err, image.ErrTruncated) {
			t.Fatalf("readAll(first %d of %d bytes) = %v, want ErrTruncated", n, len(pkg), err)
		}
	}
}

// TestReader_Streams checks the payload stream with one-byte and erroring readers: the
// bytes pass unchanged, the end is io.EOF, and an error is sticky.
func TestReader_Streams(t *testing.T) {
	t.Parallel()
	pkg, m := packTree(t, appTree())
	_, _, payload := sections(t, pkg)

	r, err := image.Open(iotest.OneByteReader(bytes.NewReader(pkg)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r.Payload())
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("ReadAll(Payload()) = %d bytes, %v; want the %d payload bytes, nil", len(got), err, len(payload))
	}
	if n, err := r.Payload().Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read after the end = %d, %v; want 0, io.EOF", n, err)
	}
	if err := iotest.TestReader(mustOpen(t, pkg).Payload(), payload); err != nil {
		t.Errorf("iotest.TestReader(Payload()) = %v", err)
	}

	// A read error is passed on, and is sticky.
	boom := errors.New("disk on fire")
	r2, err := image.Open(io.MultiReader(bytes.NewReader(pkg[:len(pkg)-10]), iotest.ErrReader(boom)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r2.Payload()); !errors.Is(err, boom) {
		t.Errorf("payload over a failing reader: %v, want %v", err, boom)
	}
	if _, err := r2.Payload().Read(make([]byte, 10)); !errors.Is(err, boom) {
		t.Errorf("Read after an error = %v, want the same error", err)
	}

	// Manifest returns a copy.
	m1 := mustOpen(t, pkg)
	got1 := m1.Manifest()
	got1.App.Capabilities.GPIO[0] = 99
	if diff := cmp.Diff(m, m1.Manifest()); diff != "" {
		t.Errorf("changing a returned manifest changed the Reader's (-want +got):\n%s", diff)
	}
}

func mustOpen(t *testing.T, pkg []byte) *image.Reader {
	t.Helper()
	r, err := image.Open(bytes.NewReader(pkg))
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	return r
}

// TestOpen_DocExamples checks the documented example manifests in docs/image-format.md: each
// JSON block marked as a manifest parses, and each marked as a source is accepted by Pack.
func TestOpen_DocExamples(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/image-format.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var manifests, sources int
	for _, block := range strings.Split(doc, "```json\n")[1:] {
		body, _, ok := strings.Cut(block, "```")
		if !ok {
			t.Fatal("unterminated json block in docs/image-format.md")
		}
		switch {
		case strings.HasPrefix(body, `{"format":`):
			manifests++
			if _, err := image.ParseManifest([]byte(strings.TrimSuffix(body, "\n"))); err != nil {
				t.Errorf("docs/image-format.md manifest example: ParseManifest = %v\n%s", err, body)
			}
		default:
			sources++
			tree := appTree()
			name := "app.json"
			if strings.Contains(body, `"kind": "os"`) {
				delete(tree, "app.json")
				name = "os.json"
			}
			tree[name] = file{content: body, mode: 0o644}
			dir := t.TempDir()
			writeTree(t, dir, tree)
			if _, err := image.Pack(t.Context(), dir, io.Discard); err != nil {
				t.Errorf("docs/image-format.md %s example: Pack = %v\n%s", name, err, body)
			}
		}
	}
	if manifests == 0 || sources == 0 {
		t.Errorf("docs/image-format.md has %d manifest and %d source examples, want some of each", manifests, sources)
	}
}
