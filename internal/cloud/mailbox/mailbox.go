// Package mailbox is a small SMTP server on loopback that keeps the mail it accepts, for
// `moat demo` (which prints the cloud's mail) and for tests of the cloud's mail sender. It
// behaves like a mailbox provider where that matters to the sender: it offers STARTTLS
// with the given certificate (and can refuse mail before it), keeps one copy of each
// Message-ID however often it is delivered, and can refuse the first transactions with
// 451 so that retries are exercised against a real server. It is bounded: a message is at
// most MaxMessageBytes, it keeps at most MaxMessages, and it listens only on loopback.
//
// A *Mailbox is safe for concurrent use.
package mailbox

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Defaults and bounds.
const (
	DefaultMaxMessages     = 1000
	DefaultMaxMessageBytes = 1 << 20
)

// Config configures a Mailbox.
type Config struct {
	// Addr is a loopback host:port ("127.0.0.1:0" picks a port).
	Addr string
	// TLSConfig, when set, is offered with STARTTLS; nil offers no STARTTLS.
	TLSConfig *tls.Config
	// RequireTLS refuses MAIL before STARTTLS (530), as a provider's submission port does.
	RequireTLS bool
	// RefuseFirst refuses the first RefuseFirst transactions with 451 after their data.
	RefuseFirst int
	// MaxMessages (default DefaultMaxMessages) bounds the messages kept; more are refused
	// with 452. MaxMessageBytes (default DefaultMaxMessageBytes) bounds one message.
	MaxMessages     int
	MaxMessageBytes int64
	Logger          *slog.Logger
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		errs = append(errs, fmt.Errorf("addr: %w", err))
	} else if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		errs = append(errs, fmt.Errorf("addr: %s is not a loopback address", host))
	}
	if c.RequireTLS && c.TLSConfig == nil {
		errs = append(errs, errors.New("require_tls: needs a tls_config"))
	}
	if c.RefuseFirst < 0 || c.MaxMessages < 0 || c.MaxMessageBytes < 0 {
		errs = append(errs, errors.New("refuse_first, max_messages, max_message_bytes: must not be negative"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger: required"))
	}
	return errors.Join(errs...)
}

// Message is a kept message.
type Message struct {
	From      string
	To        []string // envelope recipients
	Subject   string
	MessageID string // without the angle brackets
	Body      string // decoded text
	Header    mail.Header
	Raw       []byte
	// TLS reports whether the message came over TLS.
	TLS bool
}

// Mailbox is a running server.
type Mailbox struct {
	cfg Config
	srv *smtp.Server
	ln  net.Listener

	mu           sync.Mutex
	msgs         []Message
	seen         map[string]bool
	transactions int // accepted DATA, counting duplicates
	refused      int
	mailCmds     int // MAIL commands received, accepted or not
	changed      chan struct{}
	done         chan struct{}
}

// Start listens on cfg.Addr and serves until Close (ctx bounds only the listen).
func Start(ctx context.Context, cfg Config) (*Mailbox, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mailbox: %w", err)
	}
	if cfg.MaxMessages == 0 {
		cfg.MaxMessages = DefaultMaxMessages
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("mailbox: %w", err)
	}
	m := &Mailbox{cfg: cfg, ln: ln, seen: map[string]bool{}, changed: make(chan struct{}), done: make(chan struct{})}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &session{m: m, c: c}, nil }))
	s.Domain = "mailbox.localhost"
	s.TLSConfig = cfg.TLSConfig
	s.MaxMessageBytes = cfg.MaxMessageBytes
	s.MaxRecipients = 50
	s.ReadTimeout = 30 * time.Second
	s.WriteTimeout = 30 * time.Second
	s.ErrorLog = slogLogger{cfg.Logger}
	m.srv = s
	go func() {
		defer close(m.done)
		_ = s.Serve(ln)
	}()
	return m, nil
}

// Addr is the address the mailbox listens on.
func (m *Mailbox) Addr() string { return m.ln.Addr().String() }

// Close stops the server.
func (m *Mailbox) Close() error {
	err := m.srv.Close()
	// Serve may not have registered the listener yet, so the server's Close can miss it.
	_ = m.ln.Close()
	<-m.done
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// Messages returns the kept messages, one per Message-ID, in the order they came.
func (m *Mailbox) Messages() []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Message(nil), m.msgs...)
}

// Stats counts what the server saw.
type Stats struct {
	// Transactions counts accepted messages, duplicates included.
	Transactions int
	// Refused counts transactions refused with 451 (RefuseFirst).
	Refused int
	// MailCommands counts MAIL commands, accepted or not: 0 means no sender got as far as
	// naming an envelope.
	MailCommands int
}

// Stats returns the counts so far.
func (m *Mailbox) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Transactions: m.transactions, Refused: m.refused, MailCommands: m.mailCmds}
}

// Wait returns the kept messages once there are at least n, or ctx's error.
func (m *Mailbox) Wait(ctx context.Context, n int) ([]Message, error) {
	for {
		m.mu.Lock()
		if len(m.msgs) >= n {
			out := append([]Message(nil), m.msgs...)
			m.mu.Unlock()
			return out, nil
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %d messages: %w", n, ctx.Err())
		case <-ch:
		}
	}
}

var (
	errTLSRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
	errTryLater    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
	errFull        = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
	errBadMessage  = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Malformed message"}
)

// deliver keeps msg unless its Message-ID is kept already, and counts the transaction;
// it refuses the first RefuseFirst transactions.
func (m *Mailbox) deliver(msg Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refused < m.cfg.RefuseFirst {
		m.refused++
		return errTryLater
	}
	dup := msg.MessageID != "" && m.seen[msg.MessageID]
	if !dup && len(m.msgs) >= m.cfg.MaxMessages {
		return errFull
	}
	m.transactions++
	if !dup {
		if msg.MessageID != "" {
			m.seen[msg.MessageID] = true
		}
		m.msgs = append(m.msgs, msg)
	}
	close(m.changed)
	m.changed = make(chan struct{})
	return nil
}

type session struct {
	m    *Mailbox
	c    *smtp.Conn
	from string
	to   []string
}

func (s *session) tls() bool {
	_, ok := s.c.TLSConnectionState()
	return ok
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.m.mu.Lock()
	s.m.mailCmds++
	s.m.mu.Unlock()
	if s.m.cfg.RequireTLS && !s.tls() {
		return errTLSRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(io.LimitReader(r, s.m.cfg.MaxMessageBytes+1))
	if err != nil {
		return err
	}
	if int64(len(raw)) > s.m.cfg.MaxMessageBytes {
		return smtp.ErrDataTooLarge
	}
	msg, err := parse(raw)
	if err != nil {
		return errBadMessage
	}
	msg.From, msg.To, msg.TLS = s.from, append([]string(nil), s.to...), s.tls()
	return s.m.deliver(msg)
}

// parse reads the headers and the text body of a single-part message.
func parse(raw []byte) (Message, error) {
	pm, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Message{}, err
	}
	body, err := io.ReadAll(pm.Body)
	if err != nil {
		return Message{}, err
	}
	switch strings.ToLower(pm.Header.Get("Content-Transfer-Encoding")) {
	case "quoted-printable":
		body, err = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
	case "base64":
		body, err = io.ReadAll(base64.NewDecoder(base64.StdEncoding, newlineStripper{bytes.NewReader(body)}))
	}
	if err != nil {
		return Message{}, err
	}
	dec := mime.WordDecoder{}
	subject, err := dec.DecodeHeader(pm.Header.Get("Subject"))
	if err != nil {
		return Message{}, err
	}
	id := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(pm.Header.Get("Message-Id")), "<"), ">")
	return Message{Subject: subject, MessageID: id, Body: strings.ReplaceAll(string(body), "\r\n", "\n"), Header: pm.Header, Raw: raw}, nil
}

type newlineStripper struct{ r io.Reader }

func (n newlineStripper) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	j := 0
	for _, b := range p[:k] {
		if b != '\r' && b != '\n' {
			p[j] = b
			j++
		}
	}
	return j, err
}

type slogLogger struct{ l *slog.Logger }

func (l slogLogger) Printf(format string, v ...any) {
	l.l.Warn("mailbox", "error", fmt.Sprintf(format, v...))
}
func (l slogLogger) Println(v ...any) { l.l.Warn("mailbox", "error", fmt.Sprint(v...)) }
