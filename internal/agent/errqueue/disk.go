package errqueue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// disk performs the queue's file operations. fault, when set (tests only), is asked before
// each operation; an error from it stops the operation there, as a power cut would, and an
// error wrapping errShortWrite first writes half of the data (a torn write).
type disk struct {
	fault func(op string) error
}

// Operations, as fault sees them.
const (
	opCreate  = "create"
	opWrite   = "write"
	opSync    = "sync"
	opRename  = "rename"
	opSyncDir = "syncdir"
	opRemove  = "remove"
)

var errShortWrite = errors.New("short write")

func (d *disk) check(op string) error {
	if d.fault == nil {
		return nil
	}
	return d.fault(op)
}

// writeFile writes data to dir/name atomically: a temporary file, fsync, rename over name,
// fsync of the directory. A failure leaves at most the temporary file.
func (d *disk) writeFile(dir, name string, data []byte) error {
	if err := d.check(opCreate); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tempPrefix+"*")
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
	if err := d.check(opWrite); err != nil {
		if errors.Is(err, errShortWrite) {
			_, _ = f.Write(data[:len(data)/2]) // torn by the simulated power cut: its error is moot
		}
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := d.check(opSync); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := d.check(opRename); err != nil {
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
	if err := d.check(opRename); err != nil {
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

// remove deletes one file without syncing its directory.
func (d *disk) remove(path string) error {
	if err := d.check(opRemove); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// removeAll deletes the files in dir, then syncs dir once.
func (d *disk) removeAll(dir string, names []string) error {
	var errs []error
	for _, name := range names {
		if err := d.remove(filepath.Join(dir, name)); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			if d.fault != nil {
				break // the power is off
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return d.syncDir(dir)
}

func (d *disk) syncDir(dir string) error {
	if err := d.check(opSyncDir); err != nil {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
