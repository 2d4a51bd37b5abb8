package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Bounds on the decompressor, so that a hostile frame cannot make it allocate much.
const (
	zstdMaxWindow = 8 << 20
	// entryOverhead is what one tar entry may add to the stream besides its content: a
	// header block, an extended (PAX) header for a path of up to MaxPathBytes, and the
	// padding of the content to a whole block.
	entryOverhead = 4096
	// blockSize is the tar block size; tarTrailer, the end-of-archive marker, is two zero
	// blocks.
	blockSize  = 512
	tarTrailer = 2 * blockSize
)

// Unpack extracts payload, a zstd-compressed tar such as Reader.Payload returns, into dir,
// which must not exist or be empty; it is created with mode 0755 if missing. Only
// directories and regular files are extracted, with mode 0755 or 0644 (0755 when the entry
// has any execute bit); owners and times in the tar are ignored. It refuses, with
// ErrUnsafePath, absolute paths, "..", paths that Pack would not write, links, devices and
// any other entry type; with ErrTooLarge, more than maxBytes of file content or more than
// MaxEntries entries. Every write goes through an os.Root on dir, so nothing is written
// outside it even if dir gains a symbolic link meanwhile (ATTACKS row 17; attacked by
// TestUnpack_RejectsUnsafeEntries and FuzzOpen).
//
// Unpack reads payload to its end, so a Reader.Payload's length and hash check runs. On
// error, dir may hold part of the payload: the caller discards it.
func Unpack(ctx context.Context, payload io.Reader, dir string, maxBytes int64) error {
	if maxBytes <= 0 {
		return fmt.Errorf("unpack into %s: maxBytes must be positive, got %d", dir, maxBytes)
	}
	root, err := openEmptyDir(dir)
	if err != nil {
		return fmt.Errorf("unpack into %s: %w", dir, err)
	}
	defer func() { _ = root.Close() }()
	if err := unpack(ctx, payload, root, maxBytes); err != nil {
		return fmt.Errorf("unpack into %s: %w", dir, err)
	}
	return nil
}

// openEmptyDir creates dir, or checks that it is an empty directory, and opens it as a root.
func openEmptyDir(dir string) (*os.Root, error) {
	// 0755 like every directory of an image: the format fixes the modes, not the caller.
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) { //nolint:gosec // see above
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	d, err := root.Open(".")
	if err == nil {
		var names []string
		names, err = d.Readdirnames(1)
		d.Close()
		switch {
		case len(names) > 0:
			err = errors.New("directory is not empty")
		case errors.Is(err, io.EOF):
			err = nil
		}
	}
	if err != nil {
		_ = root.Close()
		return nil, err
	}
	return root, nil
}

func unpack(ctx context.Context, payload io.Reader, root *os.Root, maxBytes int64) error {
	zr, err := zstd.NewReader(payload, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		return err
	}
	defer zr.Close()
	// Counting the decompressed stream bounds the work a small, highly compressible payload
	// can cause: at most maxBytes of content plus a fixed overhead per entry.
	stream := &countReader{r: zr}
	tr := tar.NewReader(stream)
	var total int64
	entries := 0
	end := int64(0) // where the stream is after the last entry's content and padding
	for ; ; entries++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return payloadError(payload, err)
		}
		if entries >= MaxEntries {
			return fmt.Errorf("more than %d entries: %w", MaxEntries, ErrTooLarge)
		}
		if stream.n > total+int64(entries+1)*entryOverhead {
			return fmt.Errorf("tar headers larger than %d bytes per entry: %w", entryOverhead, ErrTooLarge)
		}
		name := hdr.Name
		if hdr.Typeflag == tar.TypeDir {
			name = strings.TrimSuffix(name, "/")
		}
		if err := checkPath(name); err != nil {
			return fmt.Errorf("entry %q: %w: %w", hdr.Name, err, ErrUnsafePath)
		}
		mode := fs.FileMode(0o644)
		if hdr.Mode&0o111 != 0 {
			mode = 0o755
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := makeDir(root, name); err != nil {
				return err
			}
			end = stream.n
		case tar.TypeReg:
			if hdr.Size < 0 || hdr.Size > maxBytes-total {
				return fmt.Errorf("entry %q: content exceeds %d bytes in all: %w", name, maxBytes, ErrTooLarge)
			}
			total += hdr.Size
			if err := writeFile(ctx, root, name, mode, tr, hdr.Size); err != nil {
				return payloadError(payload, err)
			}
			end = stream.n + (blockSize-hdr.Size%blockSize)%blockSize
		default:
			return fmt.Errorf("entry %q is a %s; an image holds only regular files and directories: %w",
				hdr.Name, tarTypeName(hdr.Typeflag), ErrUnsafePath)
		}
	}
	// archive/tar also ends cleanly where the stream ends between entries, or after one
	// zero block: only the full end-of-archive marker shows that nothing was cut off.
	if stream.n != end+tarTrailer {
		return payloadError(payload, errors.New("tar stream ends without its end-of-archive marker"))
	}
	// Nothing may follow the marker, in the tar stream or in the payload; reading on to the
	// end also runs the payload's length and hash check.
	var one [1]byte
	if n, err := io.ReadFull(zr, one[:]); n > 0 {
		return fmt.Errorf("data after the end of the tar: %w", ErrTrailingData)
	} else if !errors.Is(err, io.EOF) {
		return payloadError(payload, err)
	}
	if n, err := io.ReadFull(payload, one[:]); n > 0 {
		return fmt.Errorf("data after the end of the zstd stream: %w", ErrTrailingData)
	} else if !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// payloadError classifies an error met while decoding: when the payload stream itself has
// failed (a Reader's length or hash check, or a read error) that is the cause; otherwise the
// payload is not the zstd-compressed tar its manifest declares.
func payloadError(payload io.Reader, err error) error {
	if p, ok := payload.(*payloadReader); ok && p.err != nil && !errors.Is(p.err, io.EOF) {
		return p.err
	}
	for _, sentinel := range []error{ErrTooLarge, ErrUnsafePath, ErrTruncated, ErrTrailingData, ErrPayloadMismatch, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, sentinel) {
			return err
		}
	}
	if _, ok := errors.AsType[*fs.PathError](err); ok {
		return err
	}
	return fmt.Errorf("%w: %w", ErrPayloadMismatch, err)
}

// makeDir creates a directory entry's path (and any missing parents) with mode 0755.
// Repeating a directory is allowed; a directory where a file is, is not.
func makeDir(root *os.Root, name string) error {
	if err := root.MkdirAll(name, 0o755); err != nil {
		return err
	}
	return chmod(root, name, 0o755)
}

// writeFile creates a new file (never replacing one) and copies exactly size bytes into it.
func writeFile(ctx context.Context, root *os.Root, name string, mode fs.FileMode, r io.Reader, size int64) error {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("entry %q names a file or directory already unpacked: %w", name, ErrUnsafePath)
	}
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, ctxReader{ctx, r}, size)
	if err == nil {
		// OpenFile's mode is narrowed by the umask; the mode is part of the image.
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// chmod sets a directory's mode through a handle, never following a swapped-in link.
func chmod(root *os.Root, name string, mode fs.FileMode) error {
	d, err := root.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Chmod(mode)
}

func tarTypeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symbolic link"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar, tar.TypeBlock:
		return "device"
	case tar.TypeFifo:
		return "named pipe"
	}
	return fmt.Sprintf("tar entry of type %q", t)
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
