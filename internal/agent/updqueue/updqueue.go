// Package updqueue is the device's update-state queue: the steps of an update the agent
// reports (internal/updstate) wait here, on disk, until the security service has
// acknowledged them, across reboots, power loss and offline periods.
//
// It keeps the error queue's guarantees (internal/agent/errqueue) in a smaller form, since
// a report is small and a device makes a few per update. Each report is one file, named by
// the report's time and ID so that names sort oldest first, written atomically (a
// temporary file, fsync, rename, fsync of the directory); Open removes what a crash left
// half-written and any file that does not hold the report its name says. The queue is
// bounded by count: when full, Put drops the oldest download-progress report first (a
// later one supersedes it), else the oldest report, and logs the loss. Send uploads in
// batches and deletes exactly what the server acknowledged; the server stores a report ID
// once per device, so delivery is at-least-once and storage exactly-once
// (TestSend_ServerDownThenUp, TestOpen_SurvivesRestartAndCrash). A report the server
// refuses as invalid (a newer agent than the server) is dropped and logged rather than
// blocking the queue.
//
// The package links no server-side code (TestDeps). A Queue is safe for concurrent use;
// one Send runs at a time.
package updqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/updstate"
)

// DefaultMaxReports bounds the queue when Config.MaxReports is 0: a few dozen updates'
// worth of steps, at most MaxReports*updstate.MaxReportBytes on disk.
const DefaultMaxReports = 256

const (
	tempPrefix = ".tmp-"
	suffix     = ".json"
	nameTime   = "20060102T150405.000000000Z"
)

// Config configures a queue.
type Config struct {
	// Dir holds the queue; it is created (mode 0700) if missing.
	Dir string
	// MaxReports bounds the reports on disk; 0 means DefaultMaxReports. At least 2.
	MaxReports int
	Logger     *slog.Logger
}

// Queue is an open queue directory.
type Queue struct {
	dir string
	max int
	log *slog.Logger

	mu      sync.Mutex
	entries []entry // sorted by name: oldest first

	sendMu sync.Mutex
}

type entry struct {
	name     string
	id       string
	progress bool // a downloading report: dropped first when full
}

// Open opens the queue in cfg.Dir, removing temporary files a crash left behind and files
// that do not decode to the report their name says.
func Open(cfg Config) (*Queue, error) {
	if cfg.MaxReports == 0 {
		cfg.MaxReports = DefaultMaxReports
	}
	var errs []error
	if cfg.Dir == "" {
		errs = append(errs, errors.New("updqueue: Dir is required"))
	}
	if cfg.MaxReports < 2 {
		errs = append(errs, fmt.Errorf("updqueue: MaxReports must be at least 2, not %d", cfg.MaxReports))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("updqueue: %w", err)
	}
	q := &Queue{dir: cfg.Dir, max: cfg.MaxReports, log: log}
	if err := q.load(); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *Queue) load() error {
	des, err := os.ReadDir(q.dir)
	if err != nil {
		return fmt.Errorf("updqueue: %w", err)
	}
	removed := false
	for _, de := range des {
		name := de.Name()
		if !de.Type().IsRegular() {
			continue
		}
		r, err := q.read(name)
		if err != nil {
			// A temporary file of a write a crash cut short, or a file whose content is
			// not the report its name says (lost data, garbage): neither is a report.
			q.log.Warn("update-state queue: removing an unreadable file", "dir", q.dir, "file", name, "err", err)
			if err := os.Remove(filepath.Join(q.dir, name)); err != nil {
				return fmt.Errorf("updqueue: %w", err)
			}
			removed = true
			continue
		}
		q.entries = append(q.entries, entryOf(name, r))
	}
	slices.SortFunc(q.entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	if removed {
		if err := syncDir(q.dir); err != nil {
			return err
		}
	}
	// A smaller bound than the queue was written with.
	return q.makeRoom(0)
}

func (q *Queue) read(name string) (updstate.Report, error) {
	if strings.HasPrefix(name, tempPrefix) || !strings.HasSuffix(name, suffix) {
		return updstate.Report{}, errors.New("not a report file")
	}
	f, err := os.Open(filepath.Join(q.dir, name))
	if err != nil {
		return updstate.Report{}, err
	}
	defer f.Close()
	data := make([]byte, updstate.MaxReportBytes+1)
	n, err := readFull(f, data)
	if err != nil {
		return updstate.Report{}, err
	}
	r, err := updstate.Decode(data[:n])
	if err != nil {
		return r, err
	}
	if fileName(r) != name {
		return updstate.Report{}, fmt.Errorf("the file holds report %s, not what its name says", r.ID)
	}
	return r, nil
}

// readFull reads until buf is full or the file ends.
func readFull(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			if n > 0 || m == 0 {
				break
			}
			return n, err
		}
	}
	return n, nil
}

// fileName is the report's file: its time (UTC, fixed width, so names sort by it) and ID.
func fileName(r updstate.Report) string {
	return r.At.UTC().Format(nameTime) + "-" + r.ID + suffix
}

func entryOf(name string, r updstate.Report) entry {
	return entry{name: name, id: r.ID, progress: r.State == updstate.Downloading}
}

// Put validates r and queues it durably: when Put returns nil the report survives a power
// cut. A report ID already queued is a no-op.
func (q *Queue) Put(r updstate.Report) error {
	data, err := updstate.Encode(r)
	if err != nil {
		return fmt.Errorf("updqueue: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if slices.ContainsFunc(q.entries, func(e entry) bool { return e.id == r.ID }) {
		return nil
	}
	if err := q.makeRoom(1); err != nil {
		return err
	}
	name := fileName(r)
	if err := writeFile(q.dir, name, data); err != nil {
		return fmt.Errorf("updqueue: write %s: %w", name, err)
	}
	e := entryOf(name, r)
	i, _ := slices.BinarySearchFunc(q.entries, e, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	q.entries = slices.Insert(q.entries, i, e)
	return nil
}

// makeRoom drops reports until n more fit: the oldest progress report first, else the
// oldest. Called with mu held.
func (q *Queue) makeRoom(n int) error {
	for len(q.entries)+n > q.max && len(q.entries) > 0 {
		i := slices.IndexFunc(q.entries, func(e entry) bool { return e.progress })
		if i < 0 {
			i = 0
		}
		e := q.entries[i]
		q.log.Warn("update-state queue full: dropping a report", "dir", q.dir, "report_id", e.id, "progress", e.progress)
		if err := os.Remove(filepath.Join(q.dir, e.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("updqueue: %w", err)
		}
		q.entries = slices.Delete(q.entries, i, i+1)
	}
	return nil
}

// Len returns the number of queued reports.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries)
}

// Pending returns the queued reports, oldest first.
func (q *Queue) Pending() ([]updstate.Report, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.next(len(q.entries))
}

// next reads the oldest n reports. Called with mu held.
func (q *Queue) next(n int) ([]updstate.Report, error) {
	out := make([]updstate.Report, 0, min(n, len(q.entries)))
	for _, e := range q.entries[:min(n, len(q.entries))] {
		r, err := q.read(e.name)
		if err != nil {
			return nil, fmt.Errorf("updqueue: %s: %w", e.name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Ack deletes the reports with these IDs (the server holds them).
func (q *Queue) Ack(ids []string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ack(ids)
}

func (q *Queue) ack(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	gone := make(map[string]bool, len(ids))
	for _, id := range ids {
		gone[id] = true
	}
	var errs []error
	q.entries = slices.DeleteFunc(q.entries, func(e entry) bool {
		if !gone[e.id] {
			return false
		}
		if err := os.Remove(filepath.Join(q.dir, e.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			return false
		}
		return true
	})
	errs = append(errs, syncDir(q.dir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("updqueue: %w", err)
	}
	return nil
}

// Send uploads the queued reports, oldest first, in batches of updstate.MaxBatch, over the
// device API (c holds the device certificate), and deletes what the server acknowledged.
// It returns how many it delivered; on an error what was not acknowledged stays queued.
func (q *Queue) Send(ctx context.Context, c *client.Client) (int, error) {
	q.sendMu.Lock()
	defer q.sendMu.Unlock()
	sent := 0
	for {
		q.mu.Lock()
		batch, err := q.next(updstate.MaxBatch)
		q.mu.Unlock()
		if err != nil || len(batch) == 0 {
			return sent, err
		}
		wire := client.UpdateStateBatch{Reports: make([]client.UpdateState, len(batch))}
		for i, r := range batch {
			wire.Reports[i] = toWire(r)
		}
		acc, err := c.CreateUpdateStates(ctx, wire)
		if err != nil {
			if i, ok := refused(err, len(batch)); ok {
				q.log.Warn("update-state queue: the server refused a report; dropping it", "dir", q.dir, "report_id", batch[i].ID, "err", err)
				if err := q.Ack([]string{batch[i].ID}); err != nil {
					return sent, err
				}
				continue
			}
			return sent, fmt.Errorf("updqueue: upload %d update states: %w", len(batch), err)
		}
		inBatch := make(map[string]bool, len(batch))
		for _, r := range batch {
			inBatch[r.ID] = true
		}
		var ids []string
		for _, id := range acc.Accepted {
			if inBatch[id] {
				ids = append(ids, id)
				delete(inBatch, id)
			}
		}
		if err := q.Ack(ids); err != nil {
			return sent, err
		}
		sent += len(ids)
		if len(inBatch) > 0 {
			return sent, fmt.Errorf("updqueue: the server acknowledged %d of %d update states", len(ids), len(batch))
		}
	}
}

var refusedField = regexp.MustCompile(`^reports\[([0-9]+)\]`)

// refused reports whether err is the server refusing report i of the batch as invalid.
func refused(err error, n int) (int, bool) {
	ce, ok := errors.AsType[*client.Error](err)
	if !ok || ce.Status != 400 {
		return 0, false
	}
	m := refusedField.FindStringSubmatch(ce.Field)
	if m == nil {
		return 0, false
	}
	i, err := strconv.Atoi(m[1])
	if err != nil || i >= n {
		return 0, false
	}
	return i, true
}

// toWire converts a report to the client's wire type (the same JSON; TestToWire).
func toWire(r updstate.Report) client.UpdateState {
	return client.UpdateState{
		ID: r.ID, At: r.At, State: string(r.State), Kind: r.Kind, Target: r.Target, Version: r.Version,
		BytesDone: r.BytesDone, BytesTotal: r.BytesTotal, Code: r.Code, Message: r.Message, DeferredUntil: r.DeferredUntil,
	}
}

// writeFile writes data to dir/name atomically: a temporary file, fsync, rename over name,
// fsync of the directory. A failure leaves at most the temporary file, which Open removes.
func writeFile(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
