package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/image"
)

// unpackInto unpacks payload into base/out and checks that nothing appeared in base
// besides out, and nothing but regular files and directories in out.
func unpackInto(t *testing.T, payload []byte, maxBytes int64) (map[string]file, error) {
	t.Helper()
	base := t.TempDir()
	out := filepath.Join(base, "out")
	err := image.Unpack(t.Context(), bytes.NewReader(payload), out, maxBytes)
	all := readTree(t, base)
	for name := range all {
		if name != "out" && !strings.HasPrefix(name, "out/") {
			t.Errorf("Unpack wrote %s outside its directory", name)
		}
	}
	return readTree(t, out), err
}

func reg(name, content string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, content: content}
}

func dir(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

// TestUnpack_RejectsUnsafeEntries is ATTACKS row 17 for packages: entries that would write
// outside the target directory, or plant links or devices, are refused and nothing is
// written outside it.
func TestUnpack_RejectsUnsafeEntries(t *testing.T) {
	t.Parallel()
	escape := filepath.Join(t.TempDir(), "escaped") // an absolute path the test can watch
	for _, tc := range []struct {
		name    string
		entries []tarEntry
	}{
		{"dot-dot file", []tarEntry{reg("../x", "owned")}},
		{"dot-dot inside", []tarEntry{dir("a/"), reg("a/../../x", "owned")}},
		{"dot-dot directory", []tarEntry{dir("../d/")}},
		{"dot-dot alone", []tarEntry{dir("../")}},
		{"absolute path", []tarEntry{reg(escape, "owned")}},
		{"absolute etc", []tarEntry{reg("/etc/moat-test-x", "owned")}},
		{"not clean: dot", []tarEntry{reg("./x", "x")}},
		{"not clean: double slash", []tarEntry{dir("a/"), reg("a//x", "x")}},
		{"backslash dot-dot", []tarEntry{reg(`..\x`, "x")}},
		{"control character", []tarEntry{reg("a\nb", "x")}},
		{"empty name", []tarEntry{reg("", "x")}},
		{"too long", []tarEntry{reg(strings.Repeat("a/", image.MaxPathBytes/2)+"x", "x")}},
		{"symlink out", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "../"}}}},
		{"symlink then write through it", []tarEntry{
			{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: filepath.Dir(escape)}},
			reg("link/escaped", "owned")}},
		{"symlink inside", []tarEntry{reg("a", "x"), {hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "b", Linkname: "a"}}}},
		{"hard link", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "passwd", Linkname: "/etc/passwd"}}}},
		{"character device", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3}}}},
		{"block device", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Devmajor: 8}}}},
		{"named pipe", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo"}}}},
		{"duplicate file", []tarEntry{reg("x", "first"), reg("x", "second")}},
		{"file over directory", []tarEntry{dir("x/"), reg("x", "second")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := unpackInto(t, compress(t, makeTar(t, tc.entries...)), 1<<20)
			if !errors.Is(err, image.ErrUnsafePath) {
				t.Errorf("Unpack = %v, want ErrUnsafePath", err)
			}
		})
	}
	if got := readTree(t, filepath.Dir(escape)); len(got) != 0 {
		t.Errorf("files appeared at an absolute path: %v", got)
	}
}

func TestUnpack_Limits(t *testing.T) {
	t.Parallel()
	dirs := func(n int) []tarEntry {
		e := make([]tarEntry, n)
		for i := range e {
			e[i] = dir("d/")
		}
		return e
	}
	for _, tc := range []struct {
		name     string
		entries  []tarEntry
		maxBytes int64
		want     error // nil: success
	}{
		{"exactly maxBytes", []tarEntry{reg("a", "12345"), reg("b", "67890")}, 10, nil},
		{"one file over", []tarEntry{reg("a", "12345678901")}, 10, image.ErrTooLarge},
		{"sum over", []tarEntry{reg("a", "123456"), reg("b", "67890")}, 10, image.ErrTooLarge},
		{"MaxEntries entries", dirs(image.MaxEntries), 10, nil},
		{"one entry too many", dirs(image.MaxEntries + 1), 10, image.ErrTooLarge},
		{"huge extended header", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "a", Mode: 0o644,
			PAXRecords: map[string]string{"comment": strings.Repeat("x", 64<<10)}}}}, 10, image.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := unpackInto(t, compress(t, makeTar(t, tc.entries...)), tc.maxBytes)
			if tc.want == nil && err != nil || !errors.Is(err, tc.want) {
				t.Errorf("Unpack = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestUnpack_RejectsMalformedPayload(t *testing.T) {
	t.Parallel()
	good := makeTar(t, dir("a/"), reg("a/b", "content"))
	for _, tc := range []struct {
		name    string
		payload []byte
		want    error
	}{
		{"not zstd", good, image.ErrPayloadMismatch},
		{"zstd of not a tar", compress(t, []byte("hello, world")), image.ErrPayloadMismatch},
		{"empty", nil, image.ErrPayloadMismatch},
		{"data after the tar", compress(t, append(slices.Clone(good), "trailing"...)), image.ErrTrailingData},
		{"second zstd frame", append(compress(t, good), compress(t, []byte("more"))...), image.ErrTrailingData},
		{"garbage after the zstd frame", append(compress(t, good), "garbage"...), image.ErrPayloadMismatch},
		{"truncated zstd", compress(t, good)[:20], image.ErrPayloadMismatch},
		{"tar without its end marker", compress(t, good[:len(good)-1024]), image.ErrPayloadMismatch},
		{"tar with half its end marker", compress(t, good[:len(good)-512]), image.ErrPayloadMismatch},
		{"tar cut inside a header", compress(t, good[:700]), image.ErrPayloadMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := unpackInto(t, tc.payload, 1<<20); !errors.Is(err, tc.want) {
				t.Errorf("Unpack = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestUnpack_VerifiesPackagePayload checks that Unpack, fed a Reader's payload, reads it to
// the end and so reports a payload that does not match its manifest.
func TestUnpack_VerifiesPackagePayload(t *testing.T) {
	t.Parallel()
	pkg, _ := packTree(t, appTree())
	_, manifest, payload := sections(t, pkg)
	flipped := slices.Clone(payload)
	flipped[len(flipped)/2] ^= 0x10
	lastFlipped := slices.Clone(payload)
	lastFlipped[len(lastFlipped)-1] ^= 0x01 // the zstd checksum
	for _, tc := range []struct {
		name string
		pkg  []byte
		want error
	}{
		{"intact", pkg, nil},
		{"byte appended", append(slices.Clone(pkg), 0), image.ErrTrailingData},
		{"payload truncated", pkg[:len(pkg)-3], image.ErrTruncated},
		{"payload bit flipped", assemble(image.Magic, 1, manifest, flipped), image.ErrPayloadMismatch},
		{"checksum bit flipped", assemble(image.Magic, 1, manifest, lastFlipped), image.ErrPayloadMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustOpen(t, tc.pkg)
			out := filepath.Join(t.TempDir(), "out")
			err := image.Unpack(t.Context(), r.Payload(), out, 1<<20)
			if tc.want == nil && err != nil || !errors.Is(err, tc.want) {
				t.Errorf("Unpack = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestUnpack_Target(t *testing.T) {
	t.Parallel()
	payload := compress(t, makeTar(t, reg("x", "x")))
	base := t.TempDir()
	writeTree(t, base, map[string]file{"full/old": {content: "old", mode: 0o644}, "empty": {dir: true, mode: 0o755}})

	if err := image.Unpack(t.Context(), bytes.NewReader(payload), filepath.Join(base, "full"), 10); err == nil {
		t.Error("Unpack into a non-empty directory = nil error")
	}
	if err := image.Unpack(t.Context(), bytes.NewReader(payload), filepath.Join(base, "empty"), 10); err != nil {
		t.Errorf("Unpack into an empty directory = %v", err)
	}
	if err := image.Unpack(t.Context(), bytes.NewReader(payload), filepath.Join(base, "new"), 0); err == nil {
		t.Error("Unpack with maxBytes 0 = nil error")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := image.Unpack(ctx, bytes.NewReader(payload), filepath.Join(base, "cancelled"), 10); !errors.Is(err, context.Canceled) {
		t.Errorf("Unpack(cancelled) = %v, want context.Canceled", err)
	}
	want := map[string]file{
		"full": {dir: true, mode: 0o755}, "full/old": {content: "old", mode: 0o644},
		"empty": {dir: true, mode: 0o755}, "empty/x": {content: "x", mode: 0o644},
		"cancelled": {dir: true, mode: 0o755},
	}
	if diff := cmp.Diff(want, readTree(t, base), cmp.AllowUnexported(file{})); diff != "" {
		t.Errorf("tree after Unpack (-want +got):\n%s", diff)
	}
}
