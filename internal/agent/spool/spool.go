// Package spool holds the mechanics the device's on-disk queues share: a directory of small
// records, one file each, written atomically (a temporary file, fsync, rename, fsync of the
// directory), listed in name order, deleted only when the owner says so (the server or the
// broker acknowledged the record), and bounded by files and bytes. Open removes the
// temporary files a crash left behind and hands every other file to the owner's Decode, so
// that a torn, truncated or foreign file never becomes a record. Power loss at every write,
// fsync and rename (ATTACKS row 24) is attacked by TestQueue_CrashAtEveryStep: after the
// reboot every record Put returned for is there once and whole, every record Delete
// returned for is gone, and no temporary file is counted.
//
// What a record holds, how it is named (names must sort oldest first), what to drop when
// full and what to do with a bad file are the owner's policy: internal/agent/errqueue,
// internal/agent/updqueue and internal/agent/cloudlink each wrap a Queue.
//
// A Queue is not safe for concurrent use: its owner calls it under its own lock.
package spool

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// TempPrefix starts the names of files being written; such a file is never a record.
const TempPrefix = ".tmp-"

// ErrFull is returned by Put when the record does not fit the caps: the owner's drop
// policy (MakeRoom, or its own) runs first.
var ErrFull = errors.New("spool: full")

// ErrSkip, returned by Config.Decode, leaves a file in place and out of the queue (a file
// the owner keeps beside its records).
var ErrSkip = errors.New("spool: not a record")

// Config configures a queue. M is what the owner keeps in memory about each record; make it
// a pointer, so that every owner's Queue shares one compiled copy (the device build stays
// small).
type Config[M any] struct {
	// Dir holds the queue; it is created (mode 0700) if missing.
	Dir string
	// MaxFiles and MaxBytes bound the records: Put refuses one that would exceed either.
	MaxFiles int
	MaxBytes int64
	// MaxFileBytes bounds one record; a longer file is not a record.
	MaxFileBytes int64
	// Decode checks a file Open found and returns what the queue keeps about it; an error
	// makes the file bad (Open returns it; the owner decides its fate), ErrSkip leaves it
	// alone.
	Decode func(name string, data []byte) (M, error)
	// Fault, when set (power-cut tests only), is asked before each file operation; an
	// error stops the operation there, as a power cut would.
	Fault func(op Op) error
}

// Validate reports every problem with c.
func (c Config[M]) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("spool: Dir is required"))
	}
	if c.MaxFiles < 1 {
		errs = append(errs, fmt.Errorf("spool: MaxFiles must be at least 1, not %d", c.MaxFiles))
	}
	if c.MaxBytes < 1 {
		errs = append(errs, fmt.Errorf("spool: MaxBytes must be at least 1, not %d", c.MaxBytes))
	}
	if c.MaxFileBytes < 1 {
		errs = append(errs, fmt.Errorf("spool: MaxFileBytes must be at least 1, not %d", c.MaxFileBytes))
	}
	if c.Decode == nil {
		errs = append(errs, errors.New("spool: Decode is required"))
	}
	return errors.Join(errs...)
}

// Entry is one record file.
type Entry[M any] struct {
	Name string
	Size int64
	Meta M
}

// Bad is a file Open found that is not a record.
type Bad struct {
	Name string
	Err  error
}

// Queue is an open queue directory.
type Queue[M any] struct {
	cfg     Config[M]
	disk    disk
	entries []Entry[M] // sorted by name: oldest first
	bytes   int64      // of the entries' files
}

// Open opens the queue in cfg.Dir. It removes the temporary files a crash left behind,
// then reads each regular file (in name order) and keeps those Decode accepts; the others
// it returns, left in place. The caps are not applied: a queue written with larger ones
// is for the owner to trim.
func Open[M any](cfg Config[M]) (*Queue[M], []Bad, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	q := &Queue[M]{cfg: cfg, disk: disk{fault: cfg.Fault}}
	bad, err := q.load()
	if err != nil {
		return nil, nil, fmt.Errorf("spool: open %s: %w", cfg.Dir, err)
	}
	return q, bad, nil
}

func (q *Queue[M]) load() ([]Bad, error) {
	des, err := os.ReadDir(q.cfg.Dir) // sorted by name
	if err != nil {
		return nil, err
	}
	var bad []Bad
	removed := false
	for _, de := range des {
		name := de.Name()
		if !de.Type().IsRegular() {
			continue
		}
		if strings.HasPrefix(name, TempPrefix) {
			// A write a crash interrupted: its record was never acknowledged to the
			// caller of Put.
			if err := q.disk.remove(q.path(name)); err != nil {
				return nil, err
			}
			removed = true
			continue
		}
		data, err := q.Read(name)
		var m M
		if err == nil {
			m, err = q.cfg.Decode(name, data)
		}
		switch {
		case errors.Is(err, ErrSkip):
		case err != nil:
			bad = append(bad, Bad{Name: name, Err: err})
		default:
			q.entries = append(q.entries, Entry[M]{Name: name, Size: int64(len(data)), Meta: m})
			q.bytes += int64(len(data))
		}
	}
	if removed {
		if err := q.disk.syncDir(q.cfg.Dir); err != nil {
			return nil, err
		}
	}
	return bad, nil
}

func (q *Queue[M]) path(name string) string { return filepath.Join(q.cfg.Dir, name) }

// checkName refuses a name that is not one plain file name of the queue's directory.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name || strings.HasPrefix(name, TempPrefix) {
		return fmt.Errorf("spool: %q is not a record name", name)
	}
	return nil
}

// find returns the index of the entry called name, or where it would go.
func (q *Queue[M]) find(name string) (int, bool) {
	return slices.BinarySearchFunc(q.entries, name, func(e Entry[M], name string) int { return cmp.Compare(e.Name, name) })
}

// Entries returns the records, oldest (first by name) first. The slice is the queue's
// own: read it, do not keep it past the next change.
func (q *Queue[M]) Entries() []Entry[M] { return q.entries }

// Len returns the number of records.
func (q *Queue[M]) Len() int { return len(q.entries) }

// Bytes returns the bytes of the records' files.
func (q *Queue[M]) Bytes() int64 { return q.bytes }

// Fits reports whether n more records of size more bytes fit the caps.
func (q *Queue[M]) Fits(n int, size int64) bool {
	return len(q.entries)+n <= q.cfg.MaxFiles && q.bytes+size <= q.cfg.MaxBytes
}

// Read reads the file name (a record or a file kept beside them), up to MaxFileBytes.
func (q *Queue[M]) Read(name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(q.path(name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, q.cfg.MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > q.cfg.MaxFileBytes {
		return nil, fmt.Errorf("spool: %s is longer than %d bytes", name, q.cfg.MaxFileBytes)
	}
	return data, nil
}

// Put writes data atomically as the record name: when Put returns nil the record survives
// a power cut. A record of that name is replaced. Put refuses a record longer than
// MaxFileBytes and, with ErrFull, one that does not fit the caps.
func (q *Queue[M]) Put(name string, data []byte, meta M) error {
	if err := checkName(name); err != nil {
		return err
	}
	size := int64(len(data))
	if size > q.cfg.MaxFileBytes {
		return fmt.Errorf("spool: a record of %d bytes is longer than %d", size, q.cfg.MaxFileBytes)
	}
	i, found := q.find(name)
	n, old := 1, int64(0)
	if found {
		n, old = 0, q.entries[i].Size
	}
	if !q.Fits(n, size-old) {
		return fmt.Errorf("%w: %d records of %d bytes, caps %d and %d", ErrFull, len(q.entries), q.bytes, q.cfg.MaxFiles, q.cfg.MaxBytes)
	}
	if err := q.disk.writeFile(q.cfg.Dir, name, data); err != nil {
		return err
	}
	e := Entry[M]{Name: name, Size: size, Meta: meta}
	if found {
		q.entries[i] = e
	} else {
		q.entries = slices.Insert(q.entries, i, e)
	}
	q.bytes += size - old
	return nil
}

// WriteFile writes data atomically to name, a file the owner keeps beside the records
// (Decode skips it); it is not a record and not counted.
func (q *Queue[M]) WriteFile(name string, data []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	if _, found := q.find(name); found {
		return fmt.Errorf("spool: %s is a record", name)
	}
	return q.disk.writeFile(q.cfg.Dir, name, data)
}

// Rename makes the file from (written by WriteFile) the record to: a rename, so the data is
// in one or the other, never both or neither. The caps are not checked: the owner reserved
// the room when it wrote from.
func (q *Queue[M]) Rename(from, to string, meta M) error {
	if err := errors.Join(checkName(from), checkName(to)); err != nil {
		return err
	}
	if _, found := q.find(from); found {
		return fmt.Errorf("spool: %s is a record", from)
	}
	i, found := q.find(to)
	if found {
		return fmt.Errorf("spool: %s is a record already", to)
	}
	info, err := os.Stat(q.path(from))
	if err != nil {
		return err
	}
	if err := q.disk.rename(q.cfg.Dir, from, q.cfg.Dir, to); err != nil {
		return err
	}
	q.entries = slices.Insert(q.entries, i, Entry[M]{Name: to, Size: info.Size(), Meta: meta})
	q.bytes += info.Size()
	return nil
}

// Delete removes the files names, records or not, and syncs the directory once, so that a
// power cut does not bring a deleted record back. What it removed leaves the queue; what it
// could not stays, and the error says why.
func (q *Queue[M]) Delete(names ...string) error {
	if len(names) == 0 {
		return nil
	}
	for _, name := range names {
		if err := checkName(name); err != nil {
			return err
		}
	}
	gone, err := q.disk.removeAll(q.cfg.Dir, names)
	q.forget(gone)
	return err
}

// Has reports whether name is a record.
func (q *Queue[M]) Has(name string) bool {
	_, found := q.find(name)
	return found
}

// Forget takes names out of the queue without touching their files: files the owner could
// neither move nor delete, which Open will find again.
func (q *Queue[M]) Forget(names ...string) { q.forget(names) }

func (q *Queue[M]) forget(names []string) {
	for _, name := range names {
		if i, found := q.find(name); found {
			q.bytes -= q.entries[i].Size
			q.entries = slices.Delete(q.entries, i, i+1)
		}
	}
}

// MakeRoom drops records until n more of size more bytes fit the caps, or none is left:
// the record at victim(Entries()) each time, reporting each to dropped. It does not sync
// the directory: the Put that follows does, and a dropped record a power cut brings back is
// dropped again.
func (q *Queue[M]) MakeRoom(n int, size int64, victim func([]Entry[M]) int, dropped func(Entry[M])) error {
	for len(q.entries) > 0 && !q.Fits(n, size) {
		i := victim(q.entries)
		e := q.entries[i]
		if err := q.disk.remove(q.path(e.Name)); err != nil {
			return fmt.Errorf("spool: drop %s: %w", e.Name, err)
		}
		q.entries = slices.Delete(q.entries, i, i+1)
		q.bytes -= e.Size
		dropped(e)
	}
	return nil
}

// MoveAside moves the file name (a record or not) to subdir/target, out of the queue,
// syncing both directories.
func (q *Queue[M]) MoveAside(name, subdir, target string) error {
	if err := errors.Join(checkName(name), checkName(subdir), checkName(target)); err != nil {
		return err
	}
	if err := q.disk.rename(q.cfg.Dir, name, q.path(subdir), target); err != nil {
		return err
	}
	q.forget([]string{name})
	return nil
}

// TrimDir deletes the oldest (first by name) files of subdir until keep are left.
func (q *Queue[M]) TrimDir(subdir string, keep int) error {
	if err := checkName(subdir); err != nil {
		return err
	}
	dir := q.path(subdir)
	des, err := os.ReadDir(dir)
	if err != nil || len(des) <= keep {
		return err
	}
	var old []string
	for _, de := range des[:len(des)-keep] {
		old = append(old, de.Name())
	}
	_, err = q.disk.removeAll(dir, old)
	return err
}
