package cloudlink

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/moat-iot/moat/internal/agent/spool"
	"github.com/moat-iot/moat/internal/telemetry"
)

// Message kinds, as the queue's file names spell them.
const (
	kindTelemetry = "t"
	kindEvent     = "e"
	kindReply     = "r"
)

const (
	suffix    = ".json"
	seqDigits = 20
)

// queue is the link's outbox on disk: one file per message, named
// {sequence}.{kind}[.{request-id}].json so that names sort oldest first, written as the
// update-state and error queues write theirs (internal/agent/spool: a temporary file,
// fsync, rename, fsync of the directory). A file is deleted only once the broker
// acknowledged its message (PUBACK). Opening removes what a crash left half-written and any
// file whose content does not decode as its kind: the queue holds only payloads the cloud
// accepts. It is bounded by bytes and by files; when full, put drops the oldest telemetry
// first and keeps events and diagnostics replies as long as there is telemetry to drop
// (TestLink_OfflineFloodStaysWithinMaxQueue).
type queue struct {
	dir     string
	log     *slog.Logger
	dropped func(kind string) // counts a dropped message

	mu  sync.Mutex
	sp  *spool.Queue[*qentry] // oldest first
	seq uint64
}

// qentry is what the queue keeps about one message file.
type qentry struct {
	seq     uint64
	kind    string
	request string // kindReply: the request it answers
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
	q := &queue{dir: dir, log: log, dropped: dropped}
	sp, bad, err := spool.Open(spool.Config[*qentry]{Dir: dir, MaxFiles: maxFiles, MaxBytes: maxBytes,
		MaxFileBytes: telemetry.MaxReplyBytes, // the largest message
		Decode:       decode})
	if err != nil {
		return nil, fmt.Errorf("cloud queue: %w", err)
	}
	q.sp = sp
	var names []string
	for _, b := range bad {
		// A file that does not hold the message its name says is not sent.
		q.log.Warn("cloud queue: removing an unreadable file", "dir", q.dir, "file", b.Name, "err", b.Err)
		names = append(names, b.Name)
	}
	if err := q.sp.Delete(names...); err != nil {
		return nil, fmt.Errorf("cloud queue: %w", err)
	}
	for _, e := range q.sp.Entries() {
		q.seq = max(q.seq, e.Meta.seq)
	}
	// A smaller bound than the queue was written with.
	if err := q.makeRoom(0, 0); err != nil {
		return nil, err
	}
	return q, nil
}

// decode checks that data is a message of the kind its file name says.
func decode(name string, data []byte) (*qentry, error) {
	e, ok := parseName(name)
	if !ok {
		return nil, errors.New("not a message file")
	}
	return &e, check(e.kind, data)
}

// parseName reads a queue file name; ok is false for anything else.
func parseName(name string) (qentry, bool) {
	base, found := strings.CutSuffix(name, suffix)
	if !found {
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
	e := qentry{seq: seq}
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

// put stores data durably as the next message of kind: when it returns nil the message
// survives a power cut.
func (q *queue) put(kind, request string, data []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.makeRoom(int64(len(data)), 1); err != nil {
		return err
	}
	q.seq++
	name := fileName(q.seq, kind, request)
	if err := q.sp.Put(name, data, &qentry{seq: q.seq, kind: kind, request: request}); err != nil {
		return fmt.Errorf("cloud queue: write %s: %w", name, err)
	}
	return nil
}

// makeRoom drops messages until size more bytes and n more files fit: the oldest
// telemetry first (a later reading supersedes it), else the oldest message. Called with
// mu held.
func (q *queue) makeRoom(size int64, n int) error {
	victim := func(es []spool.Entry[*qentry]) int {
		return max(slices.IndexFunc(es, func(e spool.Entry[*qentry]) bool { return e.Meta.kind == kindTelemetry }), 0)
	}
	dropped := func(e spool.Entry[*qentry]) {
		q.log.Warn("cloud queue full: dropped a message", "dir", q.dir, "file", e.Name, "kind", e.Meta.kind)
		q.dropped(e.Meta.kind)
	}
	if err := q.sp.MakeRoom(n, size, victim, dropped); err != nil {
		return fmt.Errorf("cloud queue: %w", err)
	}
	return nil
}

// next returns up to n of the oldest messages that skip does not exclude, with their data.
func (q *queue) next(n int, skip func(seq uint64) bool) ([]qentry, [][]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var es []qentry
	var data [][]byte
	for _, e := range q.sp.Entries() {
		if len(es) == n {
			break
		}
		if skip(e.Meta.seq) {
			continue
		}
		d, err := q.sp.Read(e.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("cloud queue: %s: %w", e.Name, err)
		}
		es, data = append(es, *e.Meta), append(data, d)
	}
	return es, data, nil
}

// ack deletes the message seq: the broker holds it. The directory is synced so that a
// power cut does not bring the file, and a duplicate, back.
func (q *queue) ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	es := q.sp.Entries()
	i := slices.IndexFunc(es, func(e spool.Entry[*qentry]) bool { return e.Meta.seq == seq })
	if i < 0 {
		return nil // dropped meanwhile
	}
	if err := q.sp.Delete(es[i].Name); err != nil {
		return fmt.Errorf("cloud queue: %w", err)
	}
	return nil
}

// hasReply reports whether a reply to request is queued.
func (q *queue) hasReply(request string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.ContainsFunc(q.sp.Entries(), func(e spool.Entry[*qentry]) bool {
		return e.Meta.kind == kindReply && e.Meta.request == request
	})
}

// size returns the messages and bytes queued.
func (q *queue) size() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.sp.Len(), q.sp.Bytes()
}
