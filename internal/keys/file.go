package keys

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// maxFileBytes bounds what is read of a key file: a P-256 key file is well under 1 KiB.
const maxFileBytes = 64 << 10

// writeNew writes data to path with mode perm and never replaces an existing file: it
// claims path with O_CREATE|O_EXCL, writes a temporary file in the same directory, syncs
// it, renames it over the claimed (empty) path and syncs the directory. A reader therefore
// sees either the empty claim or the whole key, never a part of one; after a crash in
// between, the empty file stays and blocks a retry until it is removed by hand, which is
// safer than a rename that could replace someone's key. Enforces "never overwrite";
// attacked by TestWrite_NeverOverwrites.
func writeNew(path string, data []byte, perm fs.FileMode) (err error) {
	claim, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err // *fs.PathError; errors.Is(err, fs.ErrExist) when the file exists
	}
	claim.Close()
	renamed := false
	defer func() {
		if !renamed {
			os.Remove(path) // our own empty claim
		}
	}()

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // O_EXCL, mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // nothing left to remove after the rename
	if err := writeSync(tmp, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	renamed = true
	// Make the rename durable. Some file systems cannot sync a directory; the data itself is
	// already synced, so that is not worth failing a written key for.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func writeSync(f *os.File, data []byte, perm fs.FileMode) error {
	err := f.Chmod(perm) // exactly perm, whatever the umask
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// readFile reads at most maxFileBytes of path and returns them with the file's mode, both
// from the same open file.
func readFile(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	data, err := readAllBounded(f)
	return data, st.Mode(), err
}

func readAllBounded(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, maxFileBytes)
	}
	return data, nil
}

// checkPrivateMode refuses a private key file others may read. Windows has no such mode
// bits; there the file's ACL is the user's to set.
func checkPrivateMode(path string, mode fs.FileMode) error {
	if !mode.IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && mode.Perm()&0o077 != 0 {
		return fmt.Errorf("%w (mode %04o); run 'chmod 600 %s'", ErrExposed, mode.Perm(), path)
	}
	return nil
}
