// Package errqueue is the device's error-report queue: the reports the device runtime makes
// (internal/errreport) wait here, on disk, until the security service has acknowledged
// them, across reboots and power loss.
//
// Each report is one file in the queue directory, named by the report's time and ID so
// that names sort oldest first, and written atomically (internal/agent/spool: a temporary
// file, fsync, rename, fsync of the directory). A crash mid-write leaves only a temporary
// file, which Open removes; a file that does not hold the report its name says (truncated by a file system
// that lost data, or garbage) is moved aside to DIR/corrupt/ and reported. The queue is
// bounded by count and bytes: when full, Put drops the oldest reports and counts them in a
// synthetic agent report (errreport.CodeQueueFull), so a loss is always visible. A crash
// while dropping may count a report as dropped that is still sent; it never hides a loss.
//
// Send uploads pending reports in batches over the device API and deletes exactly what the
// server acknowledged. A report is deleted only after the server stored it, and the server
// stores a report ID once per device, so a crash between upload and delete resends the
// report and the server keeps one copy: delivery is at-least-once, storage exactly-once
// (ATTACKS rows 29 and 35; TestSend_ServerDownThenUp, TestSend_CrashBetweenUploadAndDelete,
// TestPut_CrashAtEveryStep). A report the server refuses as invalid (a newer agent than the
// server, say) is moved aside and reported rather than blocking the queue.
//
// The package links no server-side code (TestDeps). A Queue is safe for concurrent use;
// one Send runs at a time.
package errqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/spool"
	"github.com/moat-iot/moat/internal/errreport"
)

// Defaults of Config.
const (
	DefaultMaxReports = 1000
	DefaultMaxBytes   = 4 << 20
)

// CorruptDir is the subdirectory unreadable and refused report files are moved to; it keeps
// the newest maxCorrupt of them.
const CorruptDir = "corrupt"

const (
	maxCorrupt  = 32
	droppedFile = "dropped.json" // the pending CodeQueueFull report, updated as drops happen
	// dropReserve is the room the dropped.json report takes: one slot and these bytes.
	dropReserve = 512
	nameTime    = "20060102T150405.000000000Z"
)

// Config configures a queue.
type Config struct {
	// Dir holds the queue; it is created (mode 0700) if missing.
	Dir string
	// MaxReports bounds the reports on disk, the synthetic ones included; 0 means
	// DefaultMaxReports. At least 2.
	MaxReports int
	// MaxBytes bounds the bytes of the report files; 0 means DefaultMaxBytes. At least
	// twice errreport.MaxReportBytes, so that any valid report fits.
	MaxBytes int64
	// Now is the clock of the synthetic reports.
	Now    func() time.Time
	Logger *slog.Logger
}

// Queue is an open queue directory.
type Queue struct {
	dir        string
	maxReports int
	maxBytes   int64
	now        func() time.Time
	log        *slog.Logger

	mu   sync.Mutex
	sp   *spool.Queue[*entry] // the report files, oldest first
	ids  map[string]string    // report ID to file name
	drop *errreport.Report    // the report in dropped.json, nil when there is none

	sendMu sync.Mutex
}

// entry is what the queue keeps about one report file.
type entry struct {
	id string
	// dropped is what evicting this entry loses: 1 report, or the count of a sealed
	// CodeQueueFull report.
	dropped int64
}

// Stats describes the queue's contents.
type Stats struct {
	Reports int   // report files, the pending drop report included
	Bytes   int64 // their bytes
	// Dropped counts the reports dropped since the last CodeQueueFull report was sealed
	// into the queue (by Pending or Send).
	Dropped int64
}

// Open opens the queue in cfg.Dir: it removes temporary files a crash left behind, moves
// unreadable files aside (reporting them in a CodeQueueCorrupt report) and loads the rest.
func Open(cfg Config) (*Queue, error) { return open(cfg, nil) }

// open opens the queue; fault, when set (power-cut tests), is asked before each file
// operation.
func open(cfg Config, fault func(op string) error) (*Queue, error) {
	if cfg.MaxReports == 0 {
		cfg.MaxReports = DefaultMaxReports
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	var errs []error
	if cfg.Dir == "" {
		errs = append(errs, errors.New("errqueue: Dir is required"))
	}
	if cfg.MaxReports < 2 {
		errs = append(errs, fmt.Errorf("errqueue: MaxReports must be at least 2, not %d", cfg.MaxReports))
	}
	if cfg.MaxBytes < 2*errreport.MaxReportBytes {
		errs = append(errs, fmt.Errorf("errqueue: MaxBytes must be at least %d, not %d", 2*errreport.MaxReportBytes, cfg.MaxBytes))
	}
	if cfg.Now == nil {
		errs = append(errs, errors.New("errqueue: Now is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("errqueue: Logger is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	q := &Queue{dir: cfg.Dir, maxReports: cfg.MaxReports, maxBytes: cfg.MaxBytes, now: cfg.Now, log: cfg.Logger,
		ids: map[string]string{}}
	if err := os.MkdirAll(filepath.Join(q.dir, CorruptDir), 0o700); err != nil {
		return nil, fmt.Errorf("errqueue: create %s: %w", q.dir, err)
	}
	scfg := spool.Config[*entry]{Dir: q.dir, MaxFiles: q.maxReports, MaxBytes: q.maxBytes,
		MaxFileBytes: errreport.MaxReportBytes, Decode: q.decode}
	if fault != nil {
		scfg.Fault = func(op spool.Op) error { return fault(string(op)) }
	}
	sp, bad, err := spool.Open(scfg)
	if err != nil {
		return nil, fmt.Errorf("errqueue: %w", err)
	}
	q.sp = sp
	if err := q.load(bad); err != nil {
		return nil, err
	}
	return q, nil
}

// decode checks a file Open found: dropped.json is kept aside as the pending drop report,
// any other file must hold the report its name says, once. Called before the queue is
// shared.
func (q *Queue) decode(name string, data []byte) (*entry, error) {
	r, err := errreport.Decode(data)
	switch {
	case err != nil:
		return nil, err
	case name == droppedFile:
		if r.Kind != errreport.Agent || r.Code != errreport.CodeQueueFull || len(data) > dropReserve {
			return nil, errors.New("not a drop report")
		}
		q.drop = &r
		return nil, spool.ErrSkip
	case name != fileName(r) || q.ids[r.ID] != "":
		// The name does not say what the file holds: a partial or foreign file.
		return nil, errors.New("the file does not hold the report its name says")
	}
	q.ids[r.ID] = name
	return entryOf(r), nil
}

// load moves aside the files Open found bad and applies the bounds. Called before the
// queue is shared.
func (q *Queue) load(bad []spool.Bad) error {
	var names []string
	for _, b := range bad {
		q.log.Warn("error queue: unreadable file", "dir", q.dir, "file", b.Name, "err", b.Err)
		q.moveAside(b.Name)
		names = append(names, b.Name)
	}
	if len(bad) > 0 {
		msg := fmt.Sprintf("moved %d unreadable error queue files to %s/: %s", len(bad), CorruptDir, strings.Join(names, ", "))
		if err := q.putSynthetic(errreport.CodeQueueCorrupt, msg); err != nil {
			return err
		}
	}
	// The bounds may have shrunk since the files were written.
	if err := q.makeRoom(0, 0); err != nil {
		return err
	}
	return nil
}

// read reads and decodes one report file.
func (q *Queue) read(name string) (errreport.Report, error) {
	data, err := q.sp.Read(name)
	if err != nil {
		return errreport.Report{}, err
	}
	return errreport.Decode(data)
}

func (q *Queue) path(name string) string { return filepath.Join(q.dir, name) }

// fileName is where a report lives: its time, to the nanosecond in UTC, then its ID, so
// that names sort oldest first.
func fileName(r errreport.Report) string {
	return r.At.UTC().Format(nameTime) + "_" + r.ID + ".json"
}

func entryOf(r errreport.Report) *entry {
	e := &entry{id: r.ID, dropped: 1}
	if r.Kind == errreport.Agent && r.Code == errreport.CodeQueueFull {
		// Dropping a report about drops loses no report of its own, only its count.
		e.dropped = r.Dropped
	}
	return e
}

// forget removes the entries with the given IDs from the in-memory state, whatever became
// of their files.
func (q *Queue) forget(ids map[string]bool) {
	var names []string
	for id := range ids {
		if name, ok := q.ids[id]; ok {
			names = append(names, name)
			delete(q.ids, id)
		}
	}
	q.sp.Forget(names...)
}

// Put validates r and writes it to the queue, dropping the oldest reports if the queue is
// full. Putting a report ID that is pending again does nothing. When Put returns nil the
// report is on disk.
func (q *Queue) Put(r errreport.Report) error {
	data, err := errreport.Encode(r)
	if err != nil {
		return fmt.Errorf("errqueue: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.put(r, data)
}

func (q *Queue) put(r errreport.Report, data []byte) error {
	if q.ids[r.ID] != "" || (q.drop != nil && q.drop.ID == r.ID) {
		return nil
	}
	if err := q.makeRoom(1, int64(len(data))); err != nil {
		return err
	}
	name := fileName(r)
	if err := q.sp.Put(name, data, entryOf(r)); err != nil {
		return fmt.Errorf("errqueue: write report %s: %w", r.ID, err)
	}
	q.ids[r.ID] = name
	return nil
}

// stamp is the time of a synthetic report: now, or 1970 on a device whose clock says
// otherwise (a report before 1970 is invalid).
func (q *Queue) stamp() time.Time {
	now := q.now()
	if epoch := time.Unix(0, 0); now.Before(epoch) {
		return epoch
	}
	return now
}

// putSynthetic queues an agent report about the queue itself.
func (q *Queue) putSynthetic(code, msg string) error {
	now := q.stamp()
	r := errreport.Report{ID: errreport.NewID(now), Kind: errreport.Agent, At: now, Code: code, Message: errreport.Clip(msg, errreport.MaxMessageBytes)}
	data, err := errreport.Encode(r)
	if err != nil {
		return fmt.Errorf("errqueue: %w", err)
	}
	return q.put(r, data)
}

// makeRoom drops the oldest entries until n more files of size more bytes fit, counting
// them in dropped.json first: a crash after the count and before the deletes over-counts,
// never under-counts.
func (q *Queue) makeRoom(n int, size int64) error {
	entries := q.sp.Entries()
	count, bytes := len(entries)+n, q.sp.Bytes()+size
	var dropped int64
	if q.drop != nil {
		dropped = q.drop.Dropped
	}
	var evict []spool.Entry[*entry]
	for {
		reserve, reserveBytes := 0, int64(0)
		if q.drop != nil || len(evict) > 0 {
			reserve, reserveBytes = 1, dropReserve
		}
		if count+reserve <= q.maxReports && bytes+reserveBytes <= q.maxBytes {
			break
		}
		if len(evict) == len(entries) {
			return fmt.Errorf("errqueue: a report of %d bytes does not fit in %d bytes", size, q.maxBytes)
		}
		e := entries[len(evict)]
		evict = append(evict, e)
		count, bytes, dropped = count-1, bytes-e.Size, dropped+e.Meta.dropped
	}
	if len(evict) == 0 {
		return nil
	}
	if err := q.writeDrop(dropped); err != nil {
		return err
	}
	names := make([]string, len(evict))
	gone := map[string]bool{}
	for i, e := range evict {
		names[i] = e.Name
		gone[e.Meta.id] = true
	}
	q.log.Warn("error queue full: dropped the oldest reports", "dir", q.dir, "dropped", len(evict), "dropped_total", dropped)
	err := q.sp.Delete(names...)
	q.forget(gone) // whatever the deletes did, the count has them
	if err != nil {
		return fmt.Errorf("errqueue: drop oldest reports: %w", err)
	}
	return nil
}

// writeDrop writes dropped.json with the new count, keeping the report's ID and time.
func (q *Queue) writeDrop(dropped int64) error {
	now := q.stamp()
	r := errreport.Report{ID: errreport.NewID(now), Kind: errreport.Agent, At: now, Code: errreport.CodeQueueFull}
	if q.drop != nil {
		r = *q.drop
	}
	r.Dropped = dropped
	r.Message = fmt.Sprintf("the error queue was full: dropped the %d oldest reports", dropped)
	data, err := errreport.Encode(r)
	if err != nil {
		return fmt.Errorf("errqueue: %w", err)
	}
	if len(data) > dropReserve {
		return fmt.Errorf("errqueue: drop report of %d bytes exceeds its reserve", len(data)) // impossible: its fields are short
	}
	if err := q.sp.WriteFile(droppedFile, data); err != nil {
		return fmt.Errorf("errqueue: count dropped reports: %w", err)
	}
	q.drop = &r
	return nil
}

// seal moves the pending drop report into the queue, to be sent like any other; later
// drops start a new one. A rename: the report is in dropped.json or in the queue, never
// both or neither.
func (q *Queue) seal() error {
	if q.drop == nil {
		return nil
	}
	name := fileName(*q.drop)
	if err := q.sp.Rename(droppedFile, name, entryOf(*q.drop)); err != nil {
		return fmt.Errorf("errqueue: seal the drop report: %w", err)
	}
	q.ids[q.drop.ID] = name
	q.drop = nil
	return nil
}

// moveAside moves a file out of the queue into CorruptDir, keeping the newest maxCorrupt
// there; if it cannot be moved it is deleted, so that it cannot block the queue.
func (q *Queue) moveAside(name string) {
	stamp := max(q.now().UnixNano(), 0)
	target := fmt.Sprintf("%020d-%s", stamp, name[:min(len(name), 200)])
	if err := q.sp.MoveAside(name, CorruptDir, target); err != nil {
		q.log.Warn("error queue: cannot move a file aside; deleting it", "dir", q.dir, "file", name, "err", err)
		if err := q.sp.Delete(name); err != nil {
			q.log.Warn("error queue: cannot delete a file", "dir", q.dir, "file", name, "err", err)
		}
		return
	}
	if err := q.sp.TrimDir(CorruptDir, maxCorrupt); err != nil {
		q.log.Warn("error queue: cannot trim the corrupt directory", "dir", filepath.Join(q.dir, CorruptDir), "err", err)
	}
}

// Pending returns the queued reports, oldest first, the drop report included (sealed into
// the queue). A file that has become unreadable is moved aside and reported.
func (q *Queue) Pending() ([]errreport.Report, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.next(q.sp.Len() + 2)
}

// next seals the drop report and returns up to n queued reports, oldest first. Files that
// became unreadable are moved aside and reported, and the reading starts over.
func (q *Queue) next(n int) ([]errreport.Report, error) {
	if err := q.seal(); err != nil {
		return nil, err
	}
	for {
		var out []errreport.Report
		var bad []spool.Entry[*entry]
		for _, e := range q.sp.Entries() {
			if len(out) == n {
				break
			}
			r, err := q.read(e.Name)
			if err != nil || r.ID != e.Meta.id {
				q.log.Warn("error queue: a queued file became unreadable", "dir", q.dir, "file", e.Name, "err", err)
				bad = append(bad, e)
				continue
			}
			out = append(out, r)
		}
		if len(bad) == 0 {
			return out, nil
		}
		gone := map[string]bool{}
		var names []string
		for _, e := range bad {
			q.moveAside(e.Name)
			gone[e.Meta.id] = true
			names = append(names, e.Name)
		}
		q.forget(gone)
		msg := fmt.Sprintf("moved %d unreadable error queue files to %s/: %s", len(bad), CorruptDir, strings.Join(names, ", "))
		if err := q.putSynthetic(errreport.CodeQueueCorrupt, msg); err != nil {
			return nil, err
		}
	}
}

// Ack deletes the reports with the given IDs, which the server acknowledged; IDs not in the
// queue are ignored.
func (q *Queue) Ack(ids []string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ack(ids)
}

func (q *Queue) ack(ids []string) error {
	var names []string
	gone := map[string]bool{}
	for _, id := range ids {
		if name := q.ids[id]; name != "" && !gone[id] {
			names = append(names, name)
			gone[id] = true
		}
	}
	if len(names) == 0 {
		return nil
	}
	err := q.sp.Delete(names...)
	if err != nil {
		// What was deleted is gone; what was not stays queued, to be sent and acknowledged
		// again.
		for id := range gone {
			if q.sp.Has(q.ids[id]) {
				delete(gone, id)
			}
		}
		q.forget(gone)
		return fmt.Errorf("errqueue: delete acknowledged reports: %w", err)
	}
	q.forget(gone)
	return nil
}

// Stats returns the queue's size.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := Stats{Reports: q.sp.Len(), Bytes: q.sp.Bytes()}
	if q.drop != nil {
		s.Reports++
		s.Dropped = q.drop.Dropped
		if info, err := os.Stat(q.path(droppedFile)); err == nil {
			s.Bytes += info.Size()
		}
	}
	return s
}

// Send uploads the queued reports in batches of up to errreport.MaxBatch with c (a device
// API client presenting the device's certificate) and deletes each report the server
// acknowledged. It returns how many were acknowledged, and stops at the first failure:
// what was not acknowledged stays queued for the next Send. A report the server refuses
// as invalid is moved aside to CorruptDir and reported in a CodeReportRejected report.
func (q *Queue) Send(ctx context.Context, c *client.Client) (int, error) {
	q.sendMu.Lock()
	defer q.sendMu.Unlock()
	sent := 0
	for {
		q.mu.Lock()
		batch, err := q.next(errreport.MaxBatch)
		q.mu.Unlock()
		if err != nil {
			return sent, err
		}
		if len(batch) == 0 {
			return sent, nil
		}
		wire := client.ErrorReportBatch{Reports: make([]client.ErrorReport, len(batch))}
		for i, r := range batch {
			wire.Reports[i] = toWire(r)
		}
		acc, err := c.CreateErrorReports(ctx, wire)
		if err != nil {
			if i, ok := refused(err, len(batch)); ok {
				if err := q.reject(batch[i], err); err != nil {
					return sent, err
				}
				continue
			}
			return sent, fmt.Errorf("errqueue: upload %d error reports: %w", len(batch), err)
		}
		// Delete only what this batch sent and the server acknowledged.
		inBatch := map[string]bool{}
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
		q.mu.Lock()
		err = q.ack(ids)
		q.mu.Unlock()
		if err != nil {
			return sent, err
		}
		sent += len(ids)
		if len(inBatch) > 0 {
			return sent, fmt.Errorf("errqueue: the server acknowledged %d of %d reports", len(ids), len(batch))
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

// reject moves a report the server refused aside and reports that it did, unless the
// refused report is itself the agent's (which could be refused again and again).
func (q *Queue) reject(r errreport.Report, why error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	name := q.ids[r.ID]
	if name == "" {
		return nil
	}
	q.log.Warn("error queue: the server refused a report; moving it aside", "dir", q.dir, "report_id", r.ID, "kind", r.Kind, "err", why)
	q.moveAside(name)
	q.forget(map[string]bool{r.ID: true})
	if r.Kind == errreport.Agent {
		return nil
	}
	return q.putSynthetic(errreport.CodeReportRejected, fmt.Sprintf("the server refused report %s (%s): %v", r.ID, r.Kind, why))
}

// toWire converts a report to the client's wire type (the same JSON; TestToWire).
func toWire(r errreport.Report) client.ErrorReport {
	return client.ErrorReport{
		ID: r.ID, Kind: string(r.Kind), At: r.At, ImagePath: r.ImagePath, ImageVersion: r.ImageVersion, Code: r.Code, Message: r.Message,
		ExitCode: r.ExitCode, Signal: r.Signal, UptimeSeconds: r.UptimeSeconds, StderrTail: r.StderrTail,
		Step: string(r.Step), Target: r.Target, Capability: r.Capability, Dropped: r.Dropped,
	}
}
