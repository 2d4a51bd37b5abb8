package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/moat-iot/moat/internal/problem"
)

// requestIDKey carries the request ID in the context (request-scoped, STYLE principle 2).
type requestIDKey struct{}

// RequestID returns the request ID of ctx, or "".
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey{}).(string)
	return s
}

// WithRequestID returns ctx carrying the request ID id: a request served in-process on
// behalf of another (the web console calling the management API) keeps the outer request's
// ID, so its access line and audit events name the request the person made. A context
// value cannot be set from the network.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	var h [24]byte
	hex.Encode(h[:], b[:])
	return string(h[:]) // the one allocation of the ID
}

// StatusWriter records the status a handler writes, for the access log and metrics.
type StatusWriter struct {
	http.ResponseWriter
	status int
}

// Status is the status written so far, 0 before the header.
func (w *StatusWriter) Status() int { return w.status }

// WriteHeader records the first status and writes it.
func (w *StatusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (deadlines for large transfers).
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// The upload and target handlers extend their deadlines through the wrapper.
var _ interface{ Unwrap() http.ResponseWriter } = (*StatusWriter)(nil)

func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Exchange is one request as the core sees it: the request (its context carries the request
// ID), the writer that records the status, when it started and the bound on its body. An
// audience's wrapper makes one with Begin, runs its own authentication and handler, then
// calls Fail for an error and Done once.
type Exchange struct {
	W     *StatusWriter
	R     *http.Request
	ID    string
	Start time.Time
	body  *limitedBody
}

// Begin starts an exchange: a fresh request ID (X-Request-Id) unless the context already
// carries one (WithRequestID), Cache-Control: no-store, and a body bounded by bodyLimit
// bytes (none is read when bodyLimit is 0).
func Begin(rw http.ResponseWriter, r *http.Request, bodyLimit int64) Exchange {
	x := Exchange{Start: time.Now(), ID: RequestID(r.Context())}
	if x.ID == "" {
		x.ID = newRequestID()
	}
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, x.ID))
	if bodyLimit > 0 {
		// MaxBytesReader gets the server's own writer: past the limit it marks the
		// connection to close instead of draining the rest of the body.
		x.body = &limitedBody{ReadCloser: http.MaxBytesReader(rw, r.Body, bodyLimit), limit: bodyLimit}
		r.Body = x.body
	} else {
		r.Body = http.NoBody // a route that declares no body reads none
	}
	x.R = r
	x.W = &StatusWriter{ResponseWriter: rw}
	h := x.W.Header()
	h.Set("X-Request-Id", x.ID)
	h.Set("Cache-Control", "no-store")
	return x
}

// Park redirects the exchange's answer to rec once its connection was hijacked
// (Parking.Park), and lets go of the request's body and the connection's writer, which a
// parked request must not hold (their buffers are what parking saves).
func (x *Exchange) Park(rec *Recorder) {
	x.W.ResponseWriter = rec
	x.body = nil
	// The request as the answer and its access line use it: the header, the body and what
	// else the request holds go.
	r := &http.Request{Method: x.R.Method, URL: &url.URL{Path: x.R.URL.Path}, Proto: x.R.Proto,
		ProtoMajor: x.R.ProtoMajor, ProtoMinor: x.R.ProtoMinor, RemoteAddr: x.R.RemoteAddr,
		Header: http.Header{}, Body: http.NoBody}
	x.R = r.WithContext(x.R.Context())
}

// CheckLength refuses a body whose declared length is over the limit before any of it is
// read, and closes the connection after the answer rather than draining the body.
func (x *Exchange) CheckLength() error {
	if x.body == nil || x.R.ContentLength <= x.body.limit {
		return nil
	}
	x.W.Header().Set("Connection", "close")
	return tooLarge(x.body.limit)
}

// Problem is err as the problem the caller gets: 413 with the route's limit whenever the
// handler read past it, whatever error it made of that.
func (x *Exchange) Problem(err error) *problem.Error {
	if x.body != nil && x.body.hit {
		return tooLarge(x.body.limit)
	}
	return problem.From(err)
}

// Fail answers err as a problem document, logging an internal error's cause (the edge logs
// once, with the request ID).
func (x *Exchange) Fail(log *slog.Logger, route string, err error) {
	p := x.Problem(err)
	if p.Kind == problem.Internal {
		log.ErrorContext(x.R.Context(), "request failed", "request_id", x.ID, "route", route, "err", p.Err)
	}
	problem.Write(x.W, x.R, p)
}

// Done writes the access line (one per request) with extra attributes (key, value pairs)
// and observes the request in m.
func (x *Exchange) Done(log *slog.Logger, m *Metrics, route string, extra ...any) {
	var buf [4]slog.Attr
	attrs := buf[:0]
	for i := 0; i+1 < len(extra); i += 2 {
		k, _ := extra[i].(string)
		attrs = append(attrs, slog.Any(k, extra[i+1]))
	}
	x.DoneAttrs(log, m, route, attrs...)
}

// DoneAttrs is Done with typed attributes: the access line is built without boxing its
// values (issue 15: the line was a sixth of an authenticated read's handler time).
func (x *Exchange) DoneAttrs(log *slog.Logger, m *Metrics, route string, extra ...slog.Attr) {
	d := time.Since(x.Start)
	x.log(log, route, d, extra)
	m.observe(route, x.W.status, d)
}

// log writes the access line of a request that took d.
func (x *Exchange) log(log *slog.Logger, route string, d time.Duration, extra []slog.Attr) {
	ctx := x.R.Context()
	if !log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	var buf [12]slog.Attr
	attrs := append(buf[:0],
		slog.String("request_id", x.ID), slog.String("method", x.R.Method), slog.String("route", route),
		slog.Int("status", x.W.status), slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("remote_addr", x.R.RemoteAddr))
	attrs = append(attrs, extra...)
	// The record is handed to the handler as Logger.LogAttrs would, without the
	// runtime.Callers it makes for a source position: no moat handler logs one (AddSource
	// is off), and it would name this function, not the route. It was a tenth of the line.
	rec := slog.NewRecord(time.Now(), slog.LevelInfo, "http request", 0)
	rec.AddAttrs(attrs...)
	_ = log.Handler().Handle(ctx, rec) // as LogAttrs: a handler's error is not the request's
}
