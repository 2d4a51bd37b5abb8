package cloudlink

import (
	"slices"
	"sync"
)

// outbox is what the link needs of its queue: the durable one on disk (queue) or the
// one in memory (memQueue, Config.MemoryQueue).
type outbox interface {
	put(kind, request string, data []byte) error
	next(n int, skip func(seq uint64) bool) ([]qentry, [][]byte, error)
	ack(seq uint64) error
	hasReply(request string) bool
	size() (int, int64)
}

// memQueue is the outbox in memory, for the simulator: the disk queue's bounds and its
// choice of what to drop when full (the oldest telemetry first, else the oldest message),
// without its files. A message is removed once the broker acknowledged it, as on disk.
type memQueue struct {
	maxBytes int64
	maxMsgs  int
	dropped  func(kind string)

	mu    sync.Mutex
	msgs  []memMessage // oldest first
	bytes int64
	seq   uint64
}

type memMessage struct {
	e    qentry
	data []byte
}

func newMemQueue(maxBytes int64, maxMsgs int, dropped func(string)) *memQueue {
	return &memQueue{maxBytes: maxBytes, maxMsgs: maxMsgs, dropped: dropped}
}

func (q *memQueue) put(kind, request string, data []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.msgs) > 0 && (len(q.msgs)+1 > q.maxMsgs || q.bytes+int64(len(data)) > q.maxBytes) {
		i := max(slices.IndexFunc(q.msgs, func(m memMessage) bool { return m.e.kind == kindTelemetry }), 0)
		q.dropped(q.msgs[i].e.kind)
		q.remove(i)
	}
	q.seq++
	q.msgs = append(q.msgs, memMessage{e: qentry{seq: q.seq, kind: kind, request: request}, data: data})
	q.bytes += int64(len(data))
	return nil
}

// remove deletes message i; called with mu held.
func (q *memQueue) remove(i int) {
	q.bytes -= int64(len(q.msgs[i].data))
	q.msgs = slices.Delete(q.msgs, i, i+1)
	if len(q.msgs) == 0 {
		q.msgs = nil // an idle link holds no array
	}
}

func (q *memQueue) next(n int, skip func(uint64) bool) ([]qentry, [][]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var es []qentry
	var data [][]byte
	for _, m := range q.msgs {
		if len(es) == n {
			break
		}
		if skip(m.e.seq) {
			continue
		}
		es, data = append(es, m.e), append(data, m.data)
	}
	return es, data, nil
}

func (q *memQueue) ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i := slices.IndexFunc(q.msgs, func(m memMessage) bool { return m.e.seq == seq }); i >= 0 {
		q.remove(i)
	}
	return nil
}

func (q *memQueue) hasReply(request string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.ContainsFunc(q.msgs, func(m memMessage) bool { return m.e.kind == kindReply && m.e.request == request })
}

func (q *memQueue) size() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs), q.bytes
}
