package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Op names a file operation, as Config.Fault sees it.
type Op string

// The file operations, in the order an atomic write makes them: create, write, sync,
// rename, syncdir. remove deletes one file.
const (
	OpCreate  Op = "create"
	OpWrite   Op = "write"
	OpSync    Op = "sync"
	OpRename  Op = "rename"
	OpSyncDir Op = "syncdir"
	OpRemove  Op = "remove"
)

// ErrShortWrite, wrapped in the error a fault returns for OpWrite, first writes half of the
// data: a write torn by a power cut.
var ErrShortWrite = errors.New("short write")

// disk performs the queue's file operations. fault, when set (power-cut tests), is asked
// before each operation; an error from it stops the operation there, as a power cut would,
// and leaves what a power cut would leave (a temporary file is not cleaned up).
type disk struct {
	fault func(op Op) error
}

func (d *disk) check(op Op) error {
	if d.fault == nil {
		return nil
	}
	return d.fault(op)
}

// writeFile writes data to dir/name atomically: a temporary file, fsync, rename over name,
// fsync of the directory. A failure leaves at most the temporary file, which Open removes.
func (d *disk) writeFile(dir, name string, data []byte) error {
	if err := d.check(OpCreate); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, TempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		if d.fault == nil {
			os.Remove(tmp) // a crash would leave it (Open removes it); a plain error need not
		}
		return err
	}
	if err := d.check(OpWrite); err != nil {
		if errors.Is(err, ErrShortWrite) {
			_, _ = f.Write(data[:len(data)/2]) // torn by the simulated power cut: its error is moot
		}
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := d.check(OpSync); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := d.check(OpRename); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return d.syncDir(dir)
}

// rename moves a file and syncs the directories involved.
func (d *disk) rename(fromDir, from, toDir, to string) error {
	if err := d.check(OpRename); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(fromDir, from), filepath.Join(toDir, to)); err != nil {
		return err
	}
	if toDir != fromDir {
		if err := d.syncDir(toDir); err != nil {
			return err
		}
	}
	return d.syncDir(fromDir)
}

// remove deletes one file without syncing its directory; a file already gone is no error.
func (d *disk) remove(path string) error {
	if err := d.check(OpRemove); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// removeAll deletes the files in dir, then syncs dir once. It returns the names it removed
// (or found gone) and the errors of the others.
func (d *disk) removeAll(dir string, names []string) ([]string, error) {
	var errs []error
	gone := make([]string, 0, len(names))
	for _, name := range names {
		if err := d.remove(filepath.Join(dir, name)); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			continue
		}
		gone = append(gone, name)
	}
	if len(gone) > 0 {
		if err := d.syncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return gone, errors.Join(errs...)
}

func (d *disk) syncDir(dir string) error {
	if err := d.check(OpSyncDir); err != nil {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
