package cloudlink

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Message kinds, as the queue's file names spell them.
const (
	kindTelemetry = "t"
	kindEvent     = "e"
	kindReply     = "r"
)

const (
	tempPrefix = ".tmp-"
	suffix     = ".json"
	seqDigits  = 20
)

// queue is the link's outbox on disk: one file per message, named
// {sequence}.{kind}[.{request-id}].json so that names sort oldest first, written as the
// update-state and error queues write theirs (internal/agent/updqueue, errqueue: a
// temporary file, fsync, rename, fsync of the directory). A file is deleted only once the
// broker acknowledged its message (PUBACK). load removes what a crash left half-written
// and any file whose content does not decode as its kind: the queue holds only payloads
// the cloud accepts. It is bounded by bytes and by files; when full, put drops the oldest
// telemetry first and keeps events and diagnostics replies as long as there is telemetry to
// drop (TestLink_OfflineFloodStaysWithinMaxQueue).
//
// The three queues differ in what they hold, bound and drop; each is a few lines over the
// same file discipline, which is why this one is a third small copy rather than a shared
// package changing the other two.
type queue struct {
	dir      string
	maxBytes int64
	maxFiles int
	log      *slog.Logger
	dropped  func(kind string) // counts a dropped message

	mu      sync.Mutex
	entries []qentry // oldest first
	bytes   int64
	seq     uint64
}

type qentry struct {
	name    string
	seq     uint64
	kind    string
	request string // kindReply: the request it answers
	size    int64
}

// topic is the MQTT topic of e for device.
func (e qentry) topic(device string) string {
	switch e.kind {
	case kindTelemetry:
		return telemetry.TelemetryTopic(device)
	case kindEvent:
		return telemetry.EventsTopic(device)
	}
	return telemetry.ReplyTopic(device, e.request)
}

func openQueue(dir string, maxBytes int64, maxFiles int, log *slog.Logger, dropped func(string)) (*queue, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cloud queue: %w", err)
	}
	q := &queue{dir: dir, maxBytes: maxBytes, maxFiles: maxFiles, log: log, dropped: dropped}
	if err := q.load(); err != nil {
		return nil, fmt.Errorf("cloud queue: %w", err)
	}
	return q, nil
}

// parseName reads a queue file name; ok is false for anything else (temporary files).
func parseName(name string) (qentry, bool) {
	base, found := strings.CutSuffix(name, suffix)
	if !found || strings.HasPrefix(name, tempPrefix) {
		return qentry{}, false
	}
	parts := strings.Split(base, ".")
	if len(parts[0]) != seqDigits {
		return qentry{}, false
	}
	seq, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return qentry{}, false
	}
	e := qentry{name: name, seq: seq}
	switch {
	case len(parts) == 2 && (parts[1] == kindTelemetry || parts[1] == kindEvent):
		e.kind = parts[1]
	case len(parts) == 3 && parts[1] == kindReply && telemetry.ValidRequestID(parts[2]):
		e.kind, e.request = kindReply, parts[2]
	default:
		return qentry{}, false
	}
	return e, true
}

func fileName(seq uint64, kind, request string) string {
	n := fmt.Sprintf("%0*d.%s", seqDigits, seq, kind)
	if request != "" {
		n += "." + request
	}
	return n + suffix
}

// check decodes data as a message of kind.
func check(kind string, data []byte) error {
	var err error
	switch kind {
	case kindTelemetry:
		_, err = telemetry.DecodeTelemetry(data)
	case kindEvent:
		_, err = telemetry.DecodeEvent(data)
	default:
		_, err = telemetry.DecodeReply(data)
	}
	return err
}

func (q *queue) load() error {
	des, err := os.ReadDir(q.dir)
	if err != nil {
		return err
	}
	removed := false
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		e, ok := parseName(de.Name())
		var data []byte
		if ok {
			data, err = q.read(e.name)
			if err == nil {
				err = check(e.kind, data)
			}
		}
		if !ok || err != nil {
			// A temporary file of a write a crash cut short, or a file that does not hold
			// the message its name says: neither is sent.
			q.log.Warn("cloud queue: removing an unreadable file", "dir", q.dir, "file", de.Name(), "err", err)
			if err := os.Remove(filepath.Join(q.dir, de.Name())); err != nil {
				return err
			}
			removed = true
			continue
		}
		e.size = int64(len(data))
		q.entries = append(q.entries, e)
		q.bytes += e.size
		q.seq = max(q.seq, e.seq)
	}
	slices.SortFunc(q.entries, func(a, b qentry) int { return strings.Compare(a.name, b.name) })
	if removed {
		if err := syncDir(q.dir); err != nil {
			return err
		}
	}
	// A smaller bound than the queue was written with.
	return q.makeRoom(0, 0)
}

func (q *queue) read(name string) ([]byte, error) {
	f, err := os.Open(filepath.Join(q.dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, telemetry.MaxReplyBytes+1) // the largest message
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			break
		}
	}
	return buf[:n], nil
}

// put stores data durably as the next message of kind: when it returns nil the message
// survives a power cut.
func (q *queue) put(kind, request string, data []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.makeRoom(int64(len(data)), 1); err != nil {
		return err
	}
	q.seq++
	e := qentry{name: fileName(q.seq, kind, request), seq: q.seq, kind: kind, request: request, size: int64(len(data))}
	if err := writeFile(q.dir, e.name, data); err != nil {
		return fmt.Errorf("cloud queue: write %s: %w", e.name, err)
	}
	q.entries = append(q.entries, e) // seq grows: stays sorted
	q.bytes += e.size
	return nil
}

// makeRoom drops messages until size more bytes and n more files fit: the oldest
// telemetry first (a later reading supersedes it), else the oldest message. Called with
// mu held.
func (q *queue) makeRoom(size int64, n int) error {
	for len(q.entries) > 0 && (q.bytes+size > q.maxBytes || len(q.entries)+n > q.maxFiles) {
		i := slices.IndexFunc(q.entries, func(e qentry) bool { return e.kind == kindTelemetry })
		if i < 0 {
			i = 0
		}
		e := q.entries[i]
		q.log.Warn("cloud queue full: dropping a message", "dir", q.dir, "file", e.name, "kind", e.kind)
		if err := os.Remove(filepath.Join(q.dir, e.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cloud queue: %w", err)
		}
		q.entries = slices.Delete(q.entries, i, i+1)
		q.bytes -= e.size
		q.dropped(e.kind)
	}
	return nil
}

// next returns up to n of the oldest messages that skip does not exclude, with their data.
func (q *queue) next(n int, skip func(seq uint64) bool) ([]qentry, [][]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var es []qentry
	var data [][]byte
	for _, e := range q.entries {
		if len(es) == n {
			break
		}
		if skip(e.seq) {
			continue
		}
		d, err := q.read(e.name)
		if err != nil {
			return nil, nil, fmt.Errorf("cloud queue: %s: %w", e.name, err)
		}
		es, data = append(es, e), append(data, d)
	}
	return es, data, nil
}

// ack deletes the message seq: the broker holds it. The directory is synced so that a
// power cut does not bring the file, and a duplicate, back.
func (q *queue) ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.IndexFunc(q.entries, func(e qentry) bool { return e.seq == seq })
	if i < 0 {
		return nil // dropped meanwhile
	}
	e := q.entries[i]
	if err := os.Remove(filepath.Join(q.dir, e.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cloud queue: %w", err)
	}
	q.entries = slices.Delete(q.entries, i, i+1)
	q.bytes -= e.size
	return syncDir(q.dir)
}

// hasReply reports whether a reply to request is queued.
func (q *queue) hasReply(request string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.ContainsFunc(q.entries, func(e qentry) bool { return e.kind == kindReply && e.request == request })
}

// size returns the messages and bytes queued.
func (q *queue) size() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries), q.bytes
}

// writeFile writes data to dir/name atomically: a temporary file, fsync, rename over name,
// fsync of the directory.
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
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
