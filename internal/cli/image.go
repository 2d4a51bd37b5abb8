package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/problem"
)

func newImageCmd(env *Env) *ffcli.Command {
	return newNoun(env, "image", "Build, sign and publish image packages, the files devices install.",
		`An image package is one file: a manifest (what the image is, which product it is for,
which peripherals and hosts an app may use, its anti-rollback security version) and a
zstd-compressed tar of its files. The tenant signs an app package offline and publishes it;
devices install it only if the signature and the hash of the whole file check out. The
format is described in docs/image-format.md.

EXAMPLES
  moat image package examples/dw100/app --out dw100-app.img
  moat image add dw100-app.img --key contoso-release.key
  moat image list`,
		newImagePackage(env), newImageAdd(env), newImageList(env), newImageShow(env), newImageRevoke(env))
}

func newImagePackage(env *Env) *ffcli.Command {
	var out string
	return newVerb(env, "image", verb{
		name:  "package",
		args:  "DIR",
		short: "Build an image package from a directory.",
		long: `Builds an image package from DIR, which holds exactly one of app.json (an application) or
os.json (an OS image) and the files to ship. The manifest file is the image's manifest
without its payload section; it is read strictly, and every invalid field is reported.
Every other regular file and directory under DIR goes into the payload; symbolic links,
devices and other special files are refused.

Packing is deterministic: the same files give the same bytes, whatever their times, owners
or location, and so the same SHA-256 to sign. Nothing is sent to a server. The package is
written to a temporary file next to FILE and renamed into place once complete.

Prints a summary of the manifest and the package's size and SHA-256; with --output json,
the manifest.

EXAMPLES
  moat image package examples/dw100/app --out dw100-app.img
  moat image package examples/dw100/os --out moat-os.img -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&out, "out", "", "package `FILE` to write (required; replaced if it exists)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the directory to pack (DIR)"); err != nil {
				return err
			}
			if out == "" {
				return usagef("--out is required: the package file to write")
			}
			m, size, sum, err := packFile(ctx, args[0], out)
			if err != nil {
				return packError(args[0], err)
			}
			product := m.Product
			if product == "" {
				product = "-"
			}
			return s.show(m, [][2]string{
				{"Name", m.Name}, {"Kind", string(m.Kind)}, {"Version", m.Version},
				{"Security version", strconv.FormatUint(uint64(m.SecurityVersion), 10)},
				{"Product", product}, {"Component ID", m.ComponentID},
				{"Payload", fmt.Sprintf("%d bytes (%s %s)", m.Payload.Length, m.Payload.Compression, m.Payload.Format)},
				{"Package", fmt.Sprintf("%s (%d bytes)", out, size)},
				{"SHA-256", sum},
			})
		},
	})
}

// packFile packs dir into a temporary file beside out, then renames it to out, so that out
// is either the complete package or untouched. It returns the manifest and the package's
// size and SHA-256.
func packFile(ctx context.Context, dir, out string) (image.Manifest, int64, string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return image.Manifest{}, 0, "", err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(tmp, h)}
	m, err := image.Pack(ctx, dir, cw)
	if err != nil {
		return image.Manifest{}, 0, "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return image.Manifest{}, 0, "", err
	}
	if err := tmp.Sync(); err != nil {
		return image.Manifest{}, 0, "", err
	}
	if err := tmp.Close(); err != nil {
		return image.Manifest{}, 0, "", err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return image.Manifest{}, 0, "", err
	}
	done = true
	return m, cw.n, hex.EncodeToString(h.Sum(nil)), nil
}

// packError explains a packing failure: every invalid manifest field on its own line, and
// what to do about a refused file.
func packError(dir string, err error) error {
	if p, ok := errors.AsType[*problem.Error](err); ok && len(p.Fields) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "the manifest in %s is invalid:", dir)
		for _, f := range p.Fields {
			fmt.Fprintf(&b, "\n  %s: %s", f.Field, f.Detail)
		}
		return &cliError{code: ExitError, msg: b.String(), hint: "docs/image-format.md lists the manifest's fields and their rules"}
	}
	if errors.Is(err, image.ErrUnsafePath) {
		return &cliError{code: ExitError, msg: err.Error(),
			hint: "an image holds only regular files and directories: copy what a link points to into the directory"}
	}
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
