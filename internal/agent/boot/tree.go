package boot

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/moat-iot/moat/internal/image"
)

// zstdMaxWindow bounds the decompressor as image.Unpack does.
const zstdMaxWindow = 8 << 20

// verifyTree checks that dir holds exactly the payload that image.Unpack writes: every
// directory and regular file of the tar, with the same content and executable bit, and
// nothing else (no extra file, no link). What the launcher executes comes from dir, so
// verifying only image.pkg would leave the executed bytes unchecked. Every access goes
// through an os.Root on dir.
func verifyTree(payload io.Reader, dir string, maxBytes int64) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTreeMismatch, err)
	}
	defer func() { _ = root.Close() }()
	zr, err := zstd.NewReader(payload, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		return err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	want := map[string]bool{} // path -> is a directory
	var total int64
	for entries := 0; ; entries++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: payload: %w", ErrWrongImage, err)
		}
		if entries >= image.MaxEntries {
			return fmt.Errorf("%w: payload has more than %d entries", ErrWrongImage, image.MaxEntries)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if !fs.ValidPath(name) || name == "." {
			return fmt.Errorf("%w: payload entry %q", ErrWrongImage, hdr.Name)
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			want[d] = true
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			want[name] = true
			if fi, err := root.Lstat(name); err != nil || !fi.IsDir() {
				return fmt.Errorf("%w: directory %s is missing", ErrTreeMismatch, name)
			}
		case tar.TypeReg:
			want[name] = false
			if hdr.Size < 0 || hdr.Size > maxBytes-total {
				return fmt.Errorf("%w: payload content exceeds %d bytes", ErrWrongImage, maxBytes)
			}
			total += hdr.Size
			if err := compareFile(root, name, hdr, tr); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: payload entry %q is not a file or directory", ErrWrongImage, hdr.Name)
		}
	}
	// Read the streams to their ends, the decompressor's first, so that the payload's own
	// length and hash check runs (image.pkg's hash was checked already).
	if _, err := io.Copy(io.Discard, io.LimitReader(zr, maxBytes)); err != nil {
		return fmt.Errorf("%w: payload: %w", ErrWrongImage, err)
	}
	if _, err := io.Copy(io.Discard, payload); err != nil {
		return fmt.Errorf("%w: payload: %w", ErrWrongImage, err)
	}
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("%w: %w", ErrTreeMismatch, err)
		}
		if p == "." {
			return nil
		}
		isDir, ok := want[p]
		switch {
		case !ok:
			return fmt.Errorf("%w: %s is not in the image", ErrTreeMismatch, p)
		case d.IsDir() != isDir || !d.IsDir() && !d.Type().IsRegular():
			return fmt.Errorf("%w: %s is a %s, not as in the image", ErrTreeMismatch, p, d.Type())
		}
		return nil
	})
}

// compareFile checks that the file name under root is a regular file with the content and
// executable bit of the tar entry, whose content r streams.
func compareFile(root *os.Root, name string, hdr *tar.Header, r io.Reader) error {
	fi, err := root.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: file %s is missing", ErrTreeMismatch, name)
	}
	if fi.Size() != hdr.Size || (fi.Mode()&0o111 != 0) != (hdr.Mode&0o111 != 0) {
		return fmt.Errorf("%w: file %s has size %d mode %v, the image %d %v",
			ErrTreeMismatch, name, fi.Size(), fi.Mode().Perm(), hdr.Size, fs.FileMode(hdr.Mode).Perm()) //nolint:gosec // G115: only shown
	}
	f, err := root.Open(name)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTreeMismatch, err)
	}
	defer f.Close()
	hw, hf := sha256.New(), sha256.New()
	if _, err := io.Copy(hw, io.LimitReader(r, hdr.Size)); err != nil {
		return fmt.Errorf("%w: payload: %w", ErrWrongImage, err)
	}
	if _, err := io.Copy(hf, io.LimitReader(f, hdr.Size+1)); err != nil {
		return fmt.Errorf("%w: read %s: %w", ErrTreeMismatch, name, err)
	}
	if string(hw.Sum(nil)) != string(hf.Sum(nil)) {
		return fmt.Errorf("%w: file %s differs from the image", ErrTreeMismatch, name)
	}
	return nil
}

// syncTree fsyncs every file and directory under dir (image.Unpack does not), so that the
// unpacked payload is durable before the record names the slot.
func syncTree(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }()
	return fs.WalkDir(root.FS(), ".", func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		f, err := root.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sync %s: %w", p, err)
		}
		return nil
	})
}
