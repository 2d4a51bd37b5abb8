package httpapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

type startKey struct{}

// parkServer is a TLS server whose POST /wait parks its request until the test answers
// it, and whose GET /start answers the connection's start as its ConnContext recorded it;
// the parked connections come back through a second server, as internal/server does.
type parkServer struct {
	*httptest.Server
	p       *Parking
	resumed *http.Server
	parked  chan *parkedReq
	gone    chan string
	mu      sync.Mutex
	starts  int
}

type parkedReq struct {
	id  string
	pc  *Parked
	rec *Recorder
}

func newParkServer(t *testing.T, idle time.Duration) *parkServer {
	t.Helper()
	s := &parkServer{p: NewParking(idle), parked: make(chan *parkedReq, 100), gone: make(chan string, 100)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /wait", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		id := r.URL.Query().Get("id")
		w.Header().Set("X-Id", id)
		restore := func(ctx context.Context) context.Context {
			return context.WithValue(ctx, startKey{}, r.Context().Value(startKey{}))
		}
		ready := make(chan struct{})
		var pr *parkedReq
		pc, err := s.p.Park(w, r, restore, func() { <-ready; s.gone <- id; pr.answer("gone") })
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		pr = &parkedReq{id: id, pc: pc, rec: NewRecorder(w.Header())}
		close(ready)
		s.parked <- pr
	})
	mux.HandleFunc("GET /start", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Context().Value(startKey{}))
	})
	connContext := func(ctx context.Context, _ net.Conn) context.Context {
		s.mu.Lock()
		s.starts++
		n := s.starts
		s.mu.Unlock()
		return context.WithValue(ctx, startKey{}, fmt.Sprintf("conn-%d", n))
	}
	s.Server = httptest.NewUnstartedServer(mux)
	s.Config.ConnContext = connContext
	s.StartTLS()
	s.resumed = &http.Server{Handler: mux, ConnContext: s.p.ConnContext, ReadHeaderTimeout: 10 * time.Second}
	go s.resumed.Serve(s.p.Listener())
	t.Cleanup(func() { s.resumed.Close(); s.Close() })
	return s
}

func (pr *parkedReq) answer(body string) {
	pr.rec.Header().Set("Content-Type", "text/plain")
	pr.rec.WriteHeader(http.StatusOK)
	io.WriteString(pr.rec, body)
	pr.pc.Answer(pr.rec)
}

// next is the next parked request.
func (s *parkServer) next(t *testing.T) *parkedReq {
	t.Helper()
	select {
	case pr := <-s.parked:
		return pr
	case <-time.After(10 * time.Second):
		t.Fatal("no request parked within 10 s")
		return nil
	}
}

// get runs a request, reporting whether it reused a connection.
func get(t *testing.T, c *http.Client, method, url string) (string, bool) {
	t.Helper()
	var reused bool
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader("{}"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status + " " + string(b), reused
}

// TestParking_AnswerThenTheSameConnectionServesTheNext: a parked request is answered on
// its connection, which then serves the client's next requests (it is not closed and no
// new handshake is made), with the context its first server gave it: the connection start
// that tells a device's own old connection from a clone's (internal/fleet, SupersedeGrace)
// must survive the hand-back, or a renewed device would be flagged as a clone.
func TestParking_AnswerThenTheSameConnectionServesTheNext(t *testing.T) {
	s := newParkServer(t, time.Minute)
	c := s.Client()
	if got, _ := get(t, c, "GET", s.URL+"/start"); got != "200 OK conn-1" {
		t.Fatalf("first request: %q", got)
	}
	for i := range 3 {
		done := make(chan string, 1)
		go func() { got, reused := get(t, c, "POST", s.URL+"/wait?id=a"); done <- fmt.Sprint(got, " ", reused) }()
		pr := s.next(t)
		pr.answer(fmt.Sprintf("answer %d", i))
		if got, want := <-done, fmt.Sprintf("200 OK answer %d true", i); got != want {
			t.Fatalf("wait %d: %q, want %q (the answer, on the kept connection)", i, got, want)
		}
		if got, reused := get(t, c, "GET", s.URL+"/start"); got != "200 OK conn-1" || !reused {
			t.Fatalf("after wait %d: %q reused=%v; want the first connection's start, on it", i, got, reused)
		}
	}
	if s.starts != 1 {
		t.Errorf("%d connections accepted, want 1", s.starts)
	}
}

// TestParking_ClientGoneEndsTheWait: a client that closes its connection while parked is
// seen at once (gone), as net/http's background read sees it for a request in progress,
// so its wait does not last until its end.
func TestParking_ClientGoneEndsTheWait(t *testing.T) {
	if !canWatch {
		t.Skip("no watch on this platform: a gone client is seen at the answer")
	}
	s := newParkServer(t, time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/wait?id=b", strings.NewReader("{}"))
		if resp, err := s.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	s.next(t)
	cancel() // the client's transport closes the connection
	select {
	case id := <-s.gone:
		if id != "b" {
			t.Errorf("gone: %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the parked request was not told its client went within 10 s")
	}
}

// rawTLS is one TLS connection to s, written and read by hand.
func rawTLS(t *testing.T, s *parkServer) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := tls.Dial("tcp", s.Listener.Addr().String(), s.Client().Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReader(conn)
}

// TestParking_ClosesWhatItCannotHandBack: a request that asked to close, or that came with
// the next one pipelined behind it (bytes net/http read already, which cannot go back with
// the connection), is answered with Connection: close and its connection closed.
func TestParking_ClosesWhatItCannotHandBack(t *testing.T) {
	s := newParkServer(t, time.Minute)
	for name, raw := range map[string]string{
		"Connection: close": "POST /wait?id=c HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
		"pipelined":         "POST /wait?id=c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET /start HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		conn, br := rawTLS(t, s)
		if _, err := io.WriteString(conn, raw); err != nil {
			t.Fatal(err)
		}
		s.next(t).answer("closing")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "closing" || !resp.Close {
			t.Errorf("%s: answer %q close=%v; want the answer with Connection: close", name, body, resp.Close)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := br.Read(make([]byte, 1)); err == nil {
			t.Errorf("%s: the connection stayed open (read %d bytes)", name, n)
		}
	}
}

// TestParking_IdleAfterTheAnswerIsClosed: after its answer, a connection on which the
// client sends nothing is closed after the idle timeout, as net/http closes an idle one;
// it is not handed back to wait for headers without end.
func TestParking_IdleAfterTheAnswerIsClosed(t *testing.T) {
	if !canWatch {
		t.Skip("no watch on this platform: the resuming server's header timeout applies")
	}
	s := newParkServer(t, 300*time.Millisecond)
	conn, br := rawTLS(t, s)
	io.WriteString(conn, "POST /wait?id=d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	s.next(t).answer("idle")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := br.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from an idle connection after its answer; want it closed")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the idle connection closed after %s, want about the idle timeout (300 ms)", d)
	}
}

// TestParking_HoldsNoRequestGoroutine: a parked request holds neither its connection's
// goroutine nor net/http's background reader; only the watch waits, without a buffer.
func TestParking_HoldsNoRequestGoroutine(t *testing.T) {
	s := newParkServer(t, time.Minute)
	const n = 50
	count := func() int {
		buf := make([]byte, 1<<22)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "net/http.(*conn).serve(")
	}
	before := count()
	var parked []*parkedReq
	for i := range n {
		conn, _ := rawTLS(t, s)
		fmt.Fprintf(conn, "POST /wait?id=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", i)
		parked = append(parked, s.next(t))
	}
	time.Sleep(100 * time.Millisecond) // the hijacked connections' goroutines return
	if got := count() - before; got > 2 {
		t.Errorf("%d parked requests: %d more connection goroutines, want none", n, got)
	}
	for _, pr := range parked {
		pr.answer("bye")
	}
}

// TestParking_DrainClosesAfterTheAnswer: once the server drains (shutting down), an answer
// closes its connection, and Drain returns when every parked request was answered.
func TestParking_DrainClosesAfterTheAnswer(t *testing.T) {
	s := newParkServer(t, time.Minute)
	conn, br := rawTLS(t, s)
	io.WriteString(conn, "POST /wait?id=e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	pr := s.next(t)
	drained := make(chan error, 1)
	go func() { drained <- s.p.Drain(t.Context()) }()
	select {
	case <-drained:
		t.Fatal("Drain returned before the parked request was answered")
	case <-time.After(100 * time.Millisecond):
	}
	pr.answer("last")
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || !resp.Close {
		t.Fatalf("answer while draining: %v close=%v; want Connection: close", err, resp != nil && resp.Close)
	}
}
