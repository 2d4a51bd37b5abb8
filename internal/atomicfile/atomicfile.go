// Package atomicfile replaces a file so that a crash leaves either its old or its new
// content, never a mix: the device's state files (its certificate, its boot record, its
// update counter, floors and held assignment, its update deferral) are written this way.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces dir/name with data (mode 0600): a temporary file in dir is written and
// synced, renamed over name, and dir is synced so that the rename is durable.
func Write(dir, name string, data []byte) error { return WriteHooked(dir, name, data, nil) }

// WriteHooked is Write with op, when not nil, called before each step ("create NAME",
// "write NAME", "rename NAME", "sync dir of NAME"); an error from it stops the write
// there, as a crash would (the boot record's fault-injection tests).
func WriteHooked(dir, name string, data []byte, op func(string) error) (err error) {
	if op == nil {
		op = func(string) error { return nil }
	}
	if err := op("create " + name); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+name+".*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if err = op("write " + name); err == nil {
		if _, err = f.Write(data); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = op("rename " + name); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = op("sync dir of " + name); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, so that a rename or a new entry in it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
