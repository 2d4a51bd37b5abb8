package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Parked requests (issue 15: server memory per waiting device, aim 20 KiB).
//
// A device's long-poll waits up to 50 s for an answer that almost never comes sooner. In
// net/http a waiting request holds its connection's goroutine and the background reader's,
// with their stacks, and the connection's read and write buffers: about 40 KB of the 55-64
// KB a waiting device cost. A parked request holds none of it. Its handler hijacks the
// connection and returns, and the request is kept as its connection, its state for the
// answer, and a timer (internal/fleet/push). When the answer comes, Parked.Answer writes
// it, and the connection goes back to an http.Server (the resuming server, configured as
// the first) through Parking's Listener once the client sends its next request.
//
// What the connection keeps meanwhile is one small goroutine that waits, without reading,
// for the client to send or close (watch). net/http's background reader does that for a
// waiting request and cancels it when the client goes; without it a gone device's wait
// would last until its end. It also stands for the connection's idle time after the
// answer: the connection is handed back when the client sends its next request, and closed
// if the client sends nothing within the server's IdleTimeout, as net/http does.
//
// Nothing here is written by hand that net/http does for a request in progress: the
// answer is formatted by the handler into a recorder (Recorder), and this file only writes
// its status line, headers and body, which http.Header.Write formats, and sends the
// connection back to net/http.

// answerWriteTimeout bounds the write of a parked request's answer.
const answerWriteTimeout = 10 * time.Second

// errNotParkable: the request cannot be parked; its handler answers it in place.
var errNotParkable = errors.New("httpapi: this request cannot be parked")

// Parking holds the connections of parked requests and hands them back. Safe for
// concurrent use.
type Parking struct {
	idle   time.Duration
	accept chan net.Conn
	done   chan struct{} // closed by Close
	once   sync.Once
	parked sync.WaitGroup // requests parked and not yet answered

	mu       sync.Mutex
	closing  bool                                               // Drain or Close: answers close their connection
	restore  map[net.Conn]func(context.Context) context.Context // handed back, until ConnContext takes it
	watching map[*Parked]struct{}                               // connections with a watch goroutine
}

// NewParking returns a Parking whose connections may stay idle idle after an answer
// before they are closed: the server's IdleTimeout.
func NewParking(idle time.Duration) *Parking {
	return &Parking{idle: idle, accept: make(chan net.Conn, 64), done: make(chan struct{}),
		restore: map[net.Conn]func(context.Context) context.Context{}, watching: map[*Parked]struct{}{}}
}

// Listener returns the connections handed back, for the resuming http.Server's Serve. Its
// Close closes the Parking (Close).
func (p *Parking) Listener() net.Listener { return parkingListener{p} }

// ConnContext is the resuming http.Server's ConnContext: the connection's context gets
// what its first server's ConnContext put there (the restore function given to Park).
func (p *Parking) ConnContext(ctx context.Context, c net.Conn) context.Context {
	p.mu.Lock()
	f := p.restore[c]
	delete(p.restore, c)
	p.mu.Unlock()
	if f != nil {
		ctx = f(ctx)
	}
	return ctx
}

// Drain makes every answer from now on close its connection, and waits until every
// parked request was answered or ctx is done. The server calls it on shutdown, after it
// ended the waits.
func (p *Parking) Drain(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	answered := make(chan struct{})
	go func() { p.parked.Wait(); close(answered) }()
	select {
	case <-answered:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("parked requests not answered: %w", ctx.Err())
	}
}

// Close stops handing connections back and closes those answered and idle.
func (p *Parking) Close() error {
	p.once.Do(func() { close(p.done) })
	p.mu.Lock()
	p.closing = true
	idle := make([]*Parked, 0, len(p.watching))
	for pc := range p.watching {
		idle = append(idle, pc)
	}
	p.mu.Unlock()
	for _, pc := range idle {
		pc.mu.Lock()
		answered := pc.answered
		pc.mu.Unlock()
		if answered { // a parked one is closed when its answer is written
			pc.closeConn()
		}
	}
	return nil
}

// Parked is a parked request's connection.
type Parked struct {
	p       *Parking
	conn    net.Conn
	restore func(context.Context) context.Context
	gone    func()
	close   bool // answer with Connection: close, then close

	mu         sync.Mutex
	answering  bool // Answer began
	answered   bool // Answer wrote (or failed to)
	watchEnded bool // watch returned
	readable   bool // watch saw the client send (not close)
}

// Park hijacks the request's connection. restore, if not nil, is applied to the
// connection's context when it is handed back (ConnContext), so that what the first
// server's ConnContext recorded (when the connection was accepted) is kept. gone is
// called at most once, on another goroutine, when the client sends or closes before the
// answer: the caller should end its wait and Answer at once.
//
// The request's body must have been read; the caller must not touch w after Park
// succeeded. When the request cannot be parked (not HTTP/1.x, a writer that cannot
// hijack, a Parking closing) Park fails and the caller answers in place.
func (p *Parking) Park(w http.ResponseWriter, r *http.Request, restore func(context.Context) context.Context, gone func()) (*Parked, error) {
	if r.ProtoMajor != 1 {
		return nil, errNotParkable
	}
	// Counted under the lock Drain takes to set closing: none is added once Drain waits.
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil, errNotParkable
	}
	p.parked.Add(1)
	p.mu.Unlock()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.parked.Done()
		return nil, fmt.Errorf("%w: %w", errNotParkable, err)
	}
	// Nothing reads the connection until the answer; no deadline of the request's applies.
	_ = conn.SetDeadline(time.Time{})
	pc := &Parked{p: p, conn: conn, restore: restore, gone: gone,
		// Bytes net/http read past the request (a pipelined one) cannot be handed back with
		// the connection: answer this one and close.
		close: r.Close || !r.ProtoAtLeast(1, 1) || brw.Reader.Buffered() > 0}
	if rc := rawConn(conn); canWatch && rc != nil && !pc.close {
		p.mu.Lock()
		p.watching[pc] = struct{}{}
		p.mu.Unlock()
		go pc.watch(rc)
	} else {
		pc.watchEnded, pc.readable = true, !pc.close // no watch: hand back after the answer
	}
	return pc, nil
}

// rawConn is the socket under c (a TLS connection's), or nil.
func rawConn(c net.Conn) syscall.RawConn {
	if t, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = t.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// watch waits for the client to send or close, then: before the answer, tells the caller
// (gone); after it, hands the connection back, or closes it.
func (pc *Parked) watch(rc syscall.RawConn) {
	data, err := waitReadable(rc)
	pc.mu.Lock()
	pc.watchEnded, pc.readable = true, err == nil && data
	answering, answered := pc.answering, pc.answered
	pc.mu.Unlock()
	switch {
	case !answering:
		pc.gone() // its Answer hands back or closes
	case !answered: // Answer is writing: it hands back or closes
	case pc.readable:
		pc.p.handBack(pc)
	default:
		pc.p.unwatch(pc)
		pc.closeConn()
	}
}

// closeConn closes the connection; a failed close leaves nothing to do.
func (pc *Parked) closeConn() { _ = pc.conn.Close() }

// Answer writes the answer rec recorded, with the status it wrote, then hands the
// connection back or closes it. It is called once.
func (pc *Parked) Answer(rec *Recorder) {
	defer pc.p.parked.Done()
	pc.p.mu.Lock()
	closing := pc.p.closing
	pc.p.mu.Unlock()
	pc.mu.Lock()
	pc.answering = true
	if !pc.watchEnded {
		// The watch ends by the idle timeout if the client sends nothing after the answer.
		_ = pc.conn.SetReadDeadline(time.Now().Add(pc.p.idle))
	}
	pc.mu.Unlock()

	closeAfter := pc.close || closing
	var buf bytes.Buffer
	rec.writeTo(&buf, closeAfter)
	_ = pc.conn.SetWriteDeadline(time.Now().Add(answerWriteTimeout))
	_, err := pc.conn.Write(buf.Bytes())
	_ = pc.conn.SetWriteDeadline(time.Time{})

	pc.mu.Lock()
	pc.answered = true
	ended, readable := pc.watchEnded, pc.readable
	pc.mu.Unlock()
	switch {
	case err != nil || closeAfter:
		pc.p.unwatch(pc)
		pc.closeConn() // a watch still waiting ends on it
	case !ended: // the watch hands back or closes
	case readable:
		pc.p.handBack(pc)
	default:
		pc.p.unwatch(pc)
		pc.closeConn()
	}
}

func (p *Parking) unwatch(pc *Parked) {
	p.mu.Lock()
	delete(p.watching, pc)
	p.mu.Unlock()
}

// handBack gives the connection to the resuming server, or closes it when that one is
// closed.
func (p *Parking) handBack(pc *Parked) {
	p.mu.Lock()
	delete(p.watching, pc)
	if p.closing {
		p.mu.Unlock()
		pc.closeConn()
		return
	}
	if pc.restore != nil {
		p.restore[pc.conn] = pc.restore
	}
	p.mu.Unlock()
	_ = pc.conn.SetReadDeadline(time.Time{}) // the resuming server sets its own
	select {
	case p.accept <- pc.conn:
	case <-p.done:
		p.mu.Lock()
		delete(p.restore, pc.conn)
		p.mu.Unlock()
		pc.closeConn()
	}
}

type parkingListener struct{ p *Parking }

func (l parkingListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.p.accept:
		return c, nil
	case <-l.p.done:
		return nil, net.ErrClosed
	}
}

func (l parkingListener) Close() error   { return l.p.Close() }
func (l parkingListener) Addr() net.Addr { return parkedAddr{} }

type parkedAddr struct{}

func (parkedAddr) Network() string { return "parked" }
func (parkedAddr) String() string  { return "parked" }

// Recorder is a ResponseWriter that keeps the answer to a parked request, for
// Parked.Answer to write. Its header starts as a copy of what the handler set before it
// parked.
type Recorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

// NewRecorder returns a recorder whose header is a copy of h.
func NewRecorder(h http.Header) *Recorder { return &Recorder{h: h.Clone()} }

// Header is the answer's header.
func (r *Recorder) Header() http.Header { return r.h }

// WriteHeader records the first status.
func (r *Recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *Recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

// writeTo formats the answer as HTTP/1.1 with the headers net/http would add (Date,
// Content-Length, Connection: close when the connection closes after it).
func (r *Recorder) writeTo(w *bytes.Buffer, closeAfter bool) {
	status := r.status
	if status == 0 {
		status = http.StatusOK
	}
	h := r.h
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Set("Content-Length", strconv.Itoa(r.body.Len()))
	if closeAfter {
		h.Set("Connection", "close")
	}
	fmt.Fprintf(w, "HTTP/1.1 %03d %s\r\n", status, http.StatusText(status))
	_ = h.Write(w)
	w.WriteString("\r\n")
	w.Write(r.body.Bytes())
}
