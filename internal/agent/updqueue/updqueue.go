// Package updqueue is the device's update-state queue: the steps of an update the agent
// reports (internal/updstate) wait here, on disk, until the security service has
// acknowledged them, across reboots, power loss and offline periods.
//
// It keeps the error queue's guarantees (internal/agent/errqueue) in a smaller form, since
// a report is small and a device makes a few per update. Each report is one file, named by
// the report's time and ID so that names sort oldest first, written atomically
// (internal/agent/spool: a temporary file, fsync, rename, fsync of the directory); Open removes what a crash left
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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/spool"
	"github.com/moat-iot/moat/internal/updstate"
)

// DefaultMaxReports bounds the queue when Config.MaxReports is 0: a few dozen updates'
// worth of steps, at most MaxReports*updstate.MaxReportBytes on disk.
const DefaultMaxReports = 256

const (
	suffix   = ".json"
	nameTime = "20060102T150405.000000000Z"
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
	log *slog.Logger

	mu sync.Mutex
	sp *spool.Queue[*entry] // the report files, oldest first

	sendMu sync.Mutex
}

// entry is what the queue keeps about one report file.
type entry struct {
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
	q := &Queue{dir: cfg.Dir, log: log}
	sp, bad, err := spool.Open(spool.Config[*entry]{Dir: cfg.Dir, MaxFiles: cfg.MaxReports,
		MaxBytes: int64(cfg.MaxReports) * updstate.MaxReportBytes, MaxFileBytes: updstate.MaxReportBytes,
		Decode: func(name string, data []byte) (*entry, error) {
			r, err := decode(name, data)
			return entryOf(r), err
		}})
	if err != nil {
		return nil, fmt.Errorf("updqueue: %w", err)
	}
	q.sp = sp
	var names []string
	for _, b := range bad {
		// A file whose content is not the report its name says (lost data, garbage) is
		// not a report.
		q.log.Warn("update-state queue: removing an unreadable file", "dir", q.dir, "file", b.Name, "err", b.Err)
		names = append(names, b.Name)
	}
	if err := q.sp.Delete(names...); err != nil {
		return nil, fmt.Errorf("updqueue: %w", err)
	}
	// A smaller bound than the queue was written with.
	if err := q.makeRoom(0); err != nil {
		return nil, err
	}
	return q, nil
}

// decode checks that data is the report name says.
func decode(name string, data []byte) (updstate.Report, error) {
	if !strings.HasSuffix(name, suffix) {
		return updstate.Report{}, errors.New("not a report file")
	}
	r, err := updstate.Decode(data)
	if err != nil {
		return r, err
	}
	if fileName(r) != name {
		return updstate.Report{}, fmt.Errorf("the file holds report %s, not what its name says", r.ID)
	}
	return r, nil
}

func (q *Queue) read(name string) (updstate.Report, error) {
	data, err := q.sp.Read(name)
	if err != nil {
		return updstate.Report{}, err
	}
	return decode(name, data)
}

// fileName is the report's file: its time (UTC, fixed width, so names sort by it) and ID.
func fileName(r updstate.Report) string {
	return r.At.UTC().Format(nameTime) + "-" + r.ID + suffix
}

func entryOf(r updstate.Report) *entry {
	return &entry{id: r.ID, progress: r.State == updstate.Downloading}
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
	if slices.ContainsFunc(q.sp.Entries(), func(e spool.Entry[*entry]) bool { return e.Meta.id == r.ID }) {
		return nil
	}
	if err := q.makeRoom(1); err != nil {
		return err
	}
	name := fileName(r)
	if err := q.sp.Put(name, data, entryOf(r)); err != nil {
		return fmt.Errorf("updqueue: write %s: %w", name, err)
	}
	return nil
}

// makeRoom drops reports until n more fit: the oldest progress report first, else the
// oldest. Called with mu held.
func (q *Queue) makeRoom(n int) error {
	victim := func(es []spool.Entry[*entry]) int {
		return max(slices.IndexFunc(es, func(e spool.Entry[*entry]) bool { return e.Meta.progress }), 0)
	}
	dropped := func(e spool.Entry[*entry]) {
		q.log.Warn("update-state queue full: dropped a report", "dir", q.dir, "report_id", e.Meta.id, "progress", e.Meta.progress)
	}
	if err := q.sp.MakeRoom(n, 0, victim, dropped); err != nil {
		return fmt.Errorf("updqueue: %w", err)
	}
	return nil
}

// Len returns the number of queued reports.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.sp.Len()
}

// Pending returns the queued reports, oldest first.
func (q *Queue) Pending() ([]updstate.Report, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.next(q.sp.Len())
}

// next reads the oldest n reports. Called with mu held.
func (q *Queue) next(n int) ([]updstate.Report, error) {
	es := q.sp.Entries()
	out := make([]updstate.Report, 0, min(n, len(es)))
	for _, e := range es[:min(n, len(es))] {
		r, err := q.read(e.Name)
		if err != nil {
			return nil, fmt.Errorf("updqueue: %s: %w", e.Name, err)
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
	var names []string
	for _, e := range q.sp.Entries() {
		if gone[e.Meta.id] {
			names = append(names, e.Name)
		}
	}
	if err := q.sp.Delete(names...); err != nil {
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
