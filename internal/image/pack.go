package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/moat-iot/moat/internal/problem"
)

// Names of the manifest file in a directory given to Pack; exactly one must exist.
const (
	AppManifestFile = "app.json"
	OSManifestFile  = "os.json"
)

// maxSourceManifestBytes bounds app.json and os.json.
const maxSourceManifestBytes = MaxManifestBytes

// epoch is the modification time of every tar entry, so that file times do not change
// the package.
var epoch = time.Unix(0, 0).UTC()

// source is app.json or os.json as its author writes it: the manifest without the payload
// section. SecurityVersion is a pointer so that leaving it out is an error, not a zero.
type source struct {
	Format          int     `json:"format"`
	ComponentID     string  `json:"component_id"`
	Name            string  `json:"name"`
	Kind            Kind    `json:"kind"`
	Version         string  `json:"version"`
	SecurityVersion *uint32 `json:"security_version"`
	Product         string  `json:"product"`
	App             *App    `json:"app"`
}

// zstdLevel and zstdWindow fix the compressor's output for given input; changing either
// changes every package's bytes.
const (
	zstdLevel  = zstd.SpeedDefault
	zstdWindow = 4 << 20
)

// Pack builds an image package from dir and writes it to w. dir holds exactly one of
// app.json and os.json (the manifest without its payload section, decoded strictly) and the
// files to ship: every other regular file and directory goes into the payload, depth first
// with each directory's entries sorted by name, with times, owners and permissions
// normalized (0755 if any execute bit is set, else 0644). Symbolic links, devices and other
// special files are refused with ErrUnsafePath. The output depends only on the manifest and
// the files' paths, contents and execute bits. The payload is staged in a temporary file,
// never held in memory.
func Pack(ctx context.Context, dir string, w io.Writer) (Manifest, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w", dir, err)
	}
	defer func() { _ = root.Close() }()
	m, manifestFile, err := readSource(root)
	if err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w", dir, err)
	}

	tmp, err := os.CreateTemp("", "moat-image-*.tar.zst")
	if err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w", dir, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	if err := writePayload(ctx, root, manifestFile, m.App, cw); err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w", dir, err)
	}
	m.Payload = Payload{SHA256: hex.EncodeToString(h.Sum(nil)), Length: cw.n, Compression: CompressionZstd, Format: PayloadTar}
	if err := m.Validate(); err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w: %w", dir, ErrInvalidManifest, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := writePackage(w, m, tmp); err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w", dir, err)
	}
	return m, nil
}

// readSource finds and strictly decodes the manifest file of a directory to pack.
func readSource(root *os.Root) (Manifest, string, error) {
	var found []string
	for _, name := range []string{AppManifestFile, OSManifestFile} {
		if _, err := root.Lstat(name); err == nil {
			found = append(found, name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return Manifest{}, "", err
		}
	}
	switch len(found) {
	case 0:
		return Manifest{}, "", fmt.Errorf("no %s or %s in the directory", AppManifestFile, OSManifestFile)
	case 2:
		return Manifest{}, "", fmt.Errorf("both %s and %s in the directory; keep one", AppManifestFile, OSManifestFile)
	}
	name := found[0]
	b, err := readRegular(root, name, maxSourceManifestBytes)
	if err != nil {
		return Manifest{}, "", err
	}
	var s source
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Manifest{}, "", fmt.Errorf("%s: %w: %w", name, ErrInvalidManifest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Manifest{}, "", fmt.Errorf("%s: %w: data after the JSON object", name, ErrInvalidManifest)
	}
	m := Manifest{Format: s.Format, ComponentID: s.ComponentID, Name: s.Name, Kind: s.Kind,
		Version: s.Version, Product: s.Product, App: s.App}
	var v problem.Validation
	if s.SecurityVersion == nil {
		v.Add("security_version", "security_version_required", "security_version is required (the anti-rollback floor; 0 for a first release)")
	} else {
		m.SecurityVersion = *s.SecurityVersion
	}
	if want := map[Kind]string{KindApp: AppManifestFile, KindOS: OSManifestFile}[s.Kind]; want != "" && want != name {
		v.Add("kind", "kind_mismatch", "kind %q belongs in %s, not %s", s.Kind, want, name)
	}
	m.check(&v)
	if err := v.Err(); err != nil {
		return Manifest{}, "", fmt.Errorf("%s: %w: %w", name, ErrInvalidManifest, err)
	}
	return m, name, nil
}

// readRegular reads a regular file of at most limit bytes.
func readRegular(root *os.Root, name string, limit int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", name, limit, ErrTooLarge)
	}
	return b, nil
}

// writePayload writes the tar of every file but the manifest, zstd-compressed, to w.
func writePayload(ctx context.Context, root *os.Root, manifestFile string, app *App, w io.Writer) error {
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstdLevel), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(zstdWindow), zstd.WithEncoderCRC(true))
	if err != nil {
		return err
	}
	defer func() { _ = zw.Close() }() // on error paths; closed and checked below otherwise
	tw := tar.NewWriter(zw)
	entryFound := false
	entries := 0
	// fs.WalkDir visits each directory's entries sorted by name, parents before children,
	// and reports symbolic links as such without following them.
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "." || p == manifestFile {
			return nil
		}
		if err := checkPath(p); err != nil {
			return fmt.Errorf("%q: %w: %w", p, err, ErrUnsafePath)
		}
		if entries++; entries > MaxEntries {
			return fmt.Errorf("more than %d files and directories: %w", MaxEntries, ErrTooLarge)
		}
		switch t := d.Type(); {
		case t.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755, ModTime: epoch})
		case t.IsRegular():
			entryFound = entryFound || app != nil && p == app.EntryPoint
			return addFile(ctx, root, p, tw)
		default:
			return fmt.Errorf("%q is a %s; an image holds only regular files and directories: %w", p, typeName(t), ErrUnsafePath)
		}
	})
	if err != nil {
		return err
	}
	if app != nil && !entryFound {
		return fmt.Errorf("%w: app.entry_point %q is not a regular file in the directory", ErrInvalidManifest, app.EntryPoint)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// addFile writes one regular file; its size and mode come from the open file, so a file
// swapped for another kind between the walk and the open is refused (os.Root keeps any
// symbolic link swapped in from leading outside dir).
func addFile(ctx context.Context, root *os.Root, p string, tw *tar.Writer) error {
	f, err := root.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%q is a %s; an image holds only regular files and directories: %w", p, typeName(fi.Mode().Type()), ErrUnsafePath)
	}
	mode := int64(0o644)
	if fi.Mode()&0o111 != 0 {
		mode = 0o755
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Size: fi.Size(), Mode: mode, ModTime: epoch}); err != nil {
		return err
	}
	n, err := io.Copy(tw, ctxReader{ctx, f})
	if err != nil {
		return fmt.Errorf("%q: %w", p, err)
	}
	if n != fi.Size() {
		return fmt.Errorf("%q changed size while being packed", p)
	}
	return nil
}

func typeName(t fs.FileMode) string {
	switch {
	case t&fs.ModeSymlink != 0:
		return "symbolic link"
	case t&fs.ModeDevice != 0:
		return "device"
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// writePackage writes the header, the canonical manifest and exactly m.Payload.Length bytes
// of payload.
func writePackage(w io.Writer, m Manifest, payload io.Reader) error {
	mb, err := m.canonical()
	if err != nil {
		return err
	}
	if len(mb) > MaxManifestBytes {
		return fmt.Errorf("manifest of %d bytes, at most %d allowed: %w", len(mb), MaxManifestBytes, ErrTooLarge)
	}
	var h [headerLen]byte
	copy(h[:], Magic)
	binary.BigEndian.PutUint32(h[8:12], FormatVersion)
	binary.BigEndian.PutUint32(h[12:16], uint32(len(mb))) //nolint:gosec // len(mb) <= MaxManifestBytes, checked above
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	if _, err := w.Write(mb); err != nil {
		return err
	}
	n, err := io.Copy(w, io.LimitReader(payload, m.Payload.Length))
	if err != nil {
		return err
	}
	if n != m.Payload.Length {
		return fmt.Errorf("payload is %d bytes, manifest declares %d", n, m.Payload.Length)
	}
	return nil
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// ctxReader stops a long copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}
