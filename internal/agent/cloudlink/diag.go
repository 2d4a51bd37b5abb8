package cloudlink

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/moat-iot/moat/internal/telemetry"
)

// maxSeen bounds the request IDs remembered to answer a redelivered request once.
const maxSeen = 256

// Reply errors the link sends itself.
const (
	ReplyExpired   = "expired"
	ReplyBusy      = "busy"
	ReplyMalformed = "malformed request"
	ReplyTimeout   = "timeout"
)

// diagnostics bounds the diagnostics running and remembers the requests seen.
type diagnostics struct {
	slots chan struct{}

	mu    sync.Mutex
	seen  map[string]bool
	order []string // oldest first
}

func newDiagnostics(n int) *diagnostics {
	return &diagnostics{slots: make(chan struct{}, n), seen: make(map[string]bool)}
}

// first records id and reports whether it was not seen before.
func (d *diagnostics) first(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen[id] {
		return false
	}
	if len(d.order) == maxSeen {
		delete(d.seen, d.order[0])
		d.order = d.order[1:]
	}
	d.seen[id] = true
	d.order = append(d.order, id)
	return true
}

// requestHandler handles the messages of the diagnostics subscription. paho calls it on
// its router goroutine and acknowledges the message when it returns, so it only decides
// and queues; the diagnostic itself runs on a goroutine of its own.
func (l *Link) requestHandler(ctx context.Context) mqtt.MessageHandler {
	return func(_ mqtt.Client, m mqtt.Message) {
		addr, err := telemetry.ParseTopic(m.Topic())
		if err != nil || addr.Kind != telemetry.KindDiagnostics || addr.Device != l.cfg.DeviceID {
			l.log.WarnContext(ctx, "cloud link: message on an unexpected topic ignored", "topic", truncate(m.Topic(), 200))
			return
		}
		id := addr.Request
		// A request redelivered (its PUBACK was lost) or whose reply still waits in the
		// queue is answered once. Attacked by TestLink_AnswersDiagnosticsOnce.
		if !l.diag.first(id) || l.q.hasReply(id) {
			l.log.DebugContext(ctx, "diagnostics request seen before: ignored", "request_id", id)
			return
		}
		req, err := telemetry.DecodeRequest(m.Payload())
		if err == nil && req.ID != id {
			err = errors.New("the request's id is not its topic's")
		}
		if err != nil {
			l.log.WarnContext(ctx, "malformed diagnostics request", "request_id", id, "err", err)
			l.reply(ctx, id, nil, ReplyMalformed)
			return
		}
		if !l.cfg.Now().Before(req.Deadline) {
			l.log.InfoContext(ctx, "diagnostics request past its deadline: not run", "request_id", id, "command", req.Command)
			l.reply(ctx, id, nil, ReplyExpired)
			return
		}
		select {
		case l.diag.slots <- struct{}{}:
		default:
			l.log.WarnContext(ctx, "too many diagnostics running: request refused", "request_id", id, "command", req.Command)
			l.reply(ctx, id, nil, ReplyBusy)
			return
		}
		l.diagWG.Go(func() {
			defer func() { <-l.diag.slots }()
			l.run(ctx, req)
		})
	}
}

// run runs one diagnostic in the app and queues its reply.
func (l *Link) run(ctx context.Context, req telemetry.DiagnosticRequest) {
	l.diagnoses.Add(1)
	d := min(req.Deadline.Sub(l.cfg.Now()), l.cfg.DiagnoseTimeout)
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	l.log.InfoContext(ctx, "running diagnostic", "request_id", req.ID, "command", req.Command)
	res, err := l.cfg.Diagnose(dctx, req.Command, req.Args)
	switch {
	case ctx.Err() != nil:
		return // shutting down: the request is not answered; the cloud times it out
	case err != nil && dctx.Err() != nil:
		l.reply(ctx, req.ID, nil, ReplyTimeout)
	case err != nil:
		l.reply(ctx, req.ID, nil, err.Error())
	default:
		l.reply(ctx, req.ID, res, "")
	}
}

// reply queues the answer to request id: the result, or msg when not empty.
func (l *Link) reply(ctx context.Context, id string, result json.RawMessage, msg string) {
	r := telemetry.DiagnosticReply{V: telemetry.Version, ID: id, OK: msg == "", Result: result, At: l.cfg.Now().UTC()}
	if msg != "" {
		r.Error = cleanText(msg, telemetry.MaxMessageBytes)
	}
	data, err := telemetry.Encode(r)
	if err != nil {
		// The app's result is not one the cloud takes (too large, not strict JSON).
		l.log.WarnContext(ctx, "diagnostic result refused", "request_id", id, "err", err)
		r = telemetry.DiagnosticReply{V: telemetry.Version, ID: id, Error: "the app's result is not valid: " + cleanText(err.Error(), 512), At: r.At}
		if data, err = telemetry.Encode(r); err != nil {
			l.log.ErrorContext(ctx, "diagnostics reply", "request_id", id, "err", err)
			return
		}
	}
	if err := l.q.put(kindReply, id, data); err != nil {
		l.log.ErrorContext(ctx, "queue diagnostics reply", "request_id", id, "err", err)
		return
	}
	l.wake()
}

// cleanText makes s a reply error: valid UTF-8, no control characters but tab and
// newline, at most max bytes.
func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	for len(s) > max {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	if s == "" {
		s = "failed"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
