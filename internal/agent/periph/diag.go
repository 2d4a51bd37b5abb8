package periph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// maxDiagQueue bounds the diagnostics requests queued or waiting for a reply.
const maxDiagQueue = 16

// maxDiagArgsBytes bounds a request's arguments, so that the request line the app reads
// stays well under MaxLineBytes.
const maxDiagArgsBytes = 16 << 10

// Diagnostics errors.
var (
	// ErrDiagnosticsBusy: too many diagnostics requests are queued for the app.
	ErrDiagnosticsBusy = errors.New("too many diagnostics requests queued")
	// ErrDiagnosticFailed: the app answered the request with an error; see *DiagnosticError.
	ErrDiagnosticFailed = errors.New("diagnostic failed in the app")
)

// DiagnosticError is the app's error answer to a diagnostics request.
type DiagnosticError struct {
	Name    string // the request's name
	Message string // the app's words, at most 1 KiB
}

func (e *DiagnosticError) Error() string {
	return fmt.Sprintf("diagnostic %s failed in the app: %s", e.Name, e.Message)
}

// Is makes errors.Is(err, ErrDiagnosticFailed) true.
func (e *DiagnosticError) Is(target error) bool { return target == ErrDiagnosticFailed }

type diagCall struct {
	id, name string
	args     json.RawMessage
	ctx      context.Context
	done     chan diagResult // buffered: reply never blocks
}

type diagResult struct {
	result json.RawMessage
	err    error
}

// diagQueue holds diagnostics requests from the runtime until the app takes them with
// diagnostics.next, and taken ones until it replies with diagnostics.reply.
type diagQueue struct {
	mu      sync.Mutex
	queue   []*diagCall
	pending map[string]*diagCall
	notify  chan struct{} // closed and replaced when a call is queued
	seq     uint64
}

func newDiagQueue() *diagQueue {
	return &diagQueue{pending: make(map[string]*diagCall), notify: make(chan struct{})}
}

// Diagnose asks the app to run the diagnostic name with args (a JSON value; nil sends
// null) and returns its result. The app takes requests with diagnostics.next, in order; ctx
// bounds the whole wait, so give it a deadline. It returns an error wrapping
// ErrDiagnosticsBusy when 16 requests are already queued or running, a *DiagnosticError
// when the app answered with an error, and ctx's error when ctx is done first (a reply after
// that is refused to the app as unknown_request).
func (s *Server) Diagnose(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	if err := checkTopic(name); err != nil || len(name) > 64 {
		return nil, fmt.Errorf("diagnostic name %q: must be 1 to 64 letters, digits, '-', '_', '.' or '/'", truncate(name, 64))
	}
	if args == nil {
		args = json.RawMessage("null")
	}
	if len(args) > maxDiagArgsBytes || !json.Valid(args) {
		return nil, fmt.Errorf("diagnostic %s: args must be one JSON value of at most %d bytes", name, maxDiagArgsBytes)
	}
	q := s.diag
	q.mu.Lock()
	if len(q.queue)+len(q.pending) >= maxDiagQueue {
		q.mu.Unlock()
		return nil, fmt.Errorf("diagnostic %s: %w", name, ErrDiagnosticsBusy)
	}
	q.seq++
	c := &diagCall{id: strconv.FormatUint(q.seq, 10), name: name, args: compactJSON(args), ctx: ctx, done: make(chan diagResult, 1)}
	q.queue = append(q.queue, c)
	close(q.notify)
	q.notify = make(chan struct{})
	q.mu.Unlock()

	select {
	case r := <-c.done:
		return r.result, r.err
	case <-ctx.Done():
		q.forget(c)
		return nil, fmt.Errorf("diagnostic %s: %w", name, context.Cause(ctx))
	}
}

// forget drops c from the queue or the pending set.
func (q *diagQueue) forget(c *diagCall) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, c.id)
	for i, x := range q.queue {
		if x == c {
			q.queue = append(q.queue[:i], q.queue[i+1:]...)
			break
		}
	}
}

// next returns the oldest queued call whose caller still waits, moving it to pending, or
// nil when none comes within wait or ctx is done.
func (q *diagQueue) next(ctx context.Context, wait time.Duration) *diagCall {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		q.mu.Lock()
		for len(q.queue) > 0 {
			c := q.queue[0]
			q.queue = q.queue[1:]
			if c.ctx.Err() != nil {
				continue
			}
			q.pending[c.id] = c
			q.mu.Unlock()
			return c
		}
		notify := q.notify
		q.mu.Unlock()
		select {
		case <-notify:
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// reply completes the pending call id; false if there is none.
func (q *diagQueue) reply(id string, result json.RawMessage, msg string, isErr bool) bool {
	q.mu.Lock()
	c := q.pending[id]
	delete(q.pending, id)
	q.mu.Unlock()
	if c == nil {
		return false
	}
	if isErr {
		c.done <- diagResult{err: &DiagnosticError{Name: c.name, Message: msg}}
	} else {
		c.done <- diagResult{result: result}
	}
	return true
}
