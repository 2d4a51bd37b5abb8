package outbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	gomail "github.com/wneessen/go-mail"
)

// SMTP TLS modes.
const (
	// SMTPStartTLS: plain connection, then STARTTLS, which must be offered (a server or a
	// man in the middle that does not offer it gets nothing).
	SMTPStartTLS = "starttls"
	// SMTPImplicitTLS: TLS from the first byte (port 465).
	SMTPImplicitTLS = "tls"
	// SMTPNoTLS: clear text, allowed only to a loopback address (a local relay).
	SMTPNoTLS = "none"
)

// DefaultSMTPTimeout bounds one delivery (connect, dialogue, data).
const DefaultSMTPTimeout = 30 * time.Second

// SMTPConfig configures the SMTP sender.
type SMTPConfig struct {
	// Addr is the submission server, host:port.
	Addr string
	// From is the sender address; its domain ends every Message-ID.
	From string
	// Username and PasswordFile, both or neither: PLAIN authentication, only over TLS or to
	// loopback. The file holds the password (a final newline is dropped).
	Username     string
	PasswordFile string
	// TLS is SMTPStartTLS (the default when empty), SMTPImplicitTLS or SMTPNoTLS.
	TLS string
	// CAFile, when set, holds PEM certificates trusted for the server besides the system's.
	CAFile string
	// HelloName is the EHLO name ("localhost" when empty).
	HelloName string
	// Timeout bounds one delivery (DefaultSMTPTimeout when 0).
	Timeout time.Duration
}

// Validate reports every problem of c.
func (c SMTPConfig) Validate() error {
	var errs []error
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil || host == "" {
		errs = append(errs, errors.New("smtp addr: must be host:port"))
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		errs = append(errs, errors.New("smtp addr: port must be 1 to 65535"))
	}
	if _, err := mailDomain(c.From); err != nil {
		errs = append(errs, fmt.Errorf("smtp from: %w", err))
	}
	if (c.Username == "") != (c.PasswordFile == "") {
		errs = append(errs, errors.New("smtp username, smtp password file: both or neither"))
	}
	switch c.TLS {
	case "", SMTPStartTLS, SMTPImplicitTLS:
	case SMTPNoTLS:
		if err == nil && !loopbackHost(host) {
			errs = append(errs, fmt.Errorf("smtp tls: %q is allowed only to a loopback address, not %s", SMTPNoTLS, host))
		}
	default:
		errs = append(errs, fmt.Errorf("smtp tls: must be %q, %q or %q", SMTPStartTLS, SMTPImplicitTLS, SMTPNoTLS))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("smtp timeout: must not be negative"))
	}
	if strings.ContainsAny(c.HelloName, " \r\n") {
		errs = append(errs, errors.New("smtp hello name: must be one word"))
	}
	return errors.Join(errs...)
}

func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// mailDomain returns the domain of a bare address (no display name).
func mailDomain(addr string) (string, error) {
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Address != addr || a.Name != "" {
		return "", errors.New("must be a bare address such as moat@example.com")
	}
	_, domain, _ := strings.Cut(a.Address, "@")
	return domain, nil
}

// MessageID returns the Message-ID (without angle brackets) of the mail an outbox row
// with key sends from from: the same key gives the same ID, so a mail sent again after a
// crash is one message to the recipient's mailbox. The key is hashed: it may name an
// owner or a device, which a recipient's header need not show.
func MessageID(key, from string) string {
	domain, err := mailDomain(from)
	if err != nil {
		domain = "moat.invalid"
	}
	sum := sha256.Sum256([]byte("moat-outbox-mail\x00" + key))
	return hex.EncodeToString(sum[:16]) + "@" + domain
}

// SMTPMailer sends mail through one submission server; it implements Mailer. Each Send
// is one connection. Safe for concurrent use.
type SMTPMailer struct {
	cfg      SMTPConfig
	host     string
	port     int
	password string
	tls      *tls.Config
}

// NewSMTPMailer reads cfg's files and returns the mailer.
func NewSMTPMailer(cfg SMTPConfig) (*SMTPMailer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.TLS = cmpOr(cfg.TLS, SMTPStartTLS)
	cfg.HelloName = cmpOr(cfg.HelloName, "localhost")
	cfg.Timeout = cmpOr(cfg.Timeout, DefaultSMTPTimeout)
	host, port, _ := net.SplitHostPort(cfg.Addr)
	m := &SMTPMailer{cfg: cfg, host: host}
	m.port, _ = strconv.Atoi(port)
	if cfg.PasswordFile != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("smtp password file: %w", err)
		}
		m.password = strings.TrimRight(string(b), "\r\n")
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("smtp ca file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("smtp ca file %s: no PEM certificate", cfg.CAFile)
		}
	}
	m.tls = &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12}
	return m, nil
}

// Send delivers msg. A 4xx answer or a broken connection is an error to retry; a 5xx
// answer to the envelope or the data (a refused recipient, a refused message) is
// Permanent. Failing STARTTLS or authentication is retried: the operator can fix it.
func (s *SMTPMailer) Send(ctx context.Context, msg Mail) error {
	m, err := s.message(msg)
	if err != nil {
		return Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var conn net.Conn
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var (
			c   net.Conn
			err error
		)
		if s.cfg.TLS == SMTPImplicitTLS {
			c, err = (&tls.Dialer{Config: s.tls.Clone()}).DialContext(ctx, network, addr)
		} else {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		conn = c
		return c, err
	}
	opts := []gomail.Option{
		gomail.WithPort(s.port), gomail.WithHELO(s.cfg.HelloName), gomail.WithTimeout(s.cfg.Timeout),
		gomail.WithTLSConfig(s.tls.Clone()), gomail.WithDialContextFunc(dial),
	}
	switch s.cfg.TLS {
	case SMTPStartTLS:
		// Enforces "no mail in the clear": attacked by TestMail_RefusesServerWithoutSTARTTLS.
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	default: // implicit TLS is TLS already; none is loopback only (Validate)
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if s.cfg.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthPlain), gomail.WithUsername(s.cfg.Username),
			gomail.WithPassword(s.password))
	}
	c, err := gomail.NewClient(s.host, opts...)
	if err != nil {
		return fmt.Errorf("smtp client: %w", err)
	}
	err = c.DialAndSendWithContext(ctx, m)
	if conn != nil {
		// go-mail leaves the connection open when the dialogue fails before sending.
		_ = conn.Close()
	}
	if err == nil {
		return nil
	}
	err = fmt.Errorf("smtp %s: %w", s.cfg.Addr, err)
	if se, ok := errors.AsType[*gomail.SendError](err); ok && !se.IsTemp() && se.ErrorCode() >= 500 {
		switch se.Reason {
		case gomail.ErrSMTPMailFrom, gomail.ErrSMTPRcptTo, gomail.ErrSMTPData, gomail.ErrSMTPDataClose:
			return Permanent(err)
		}
	}
	return err
}

func (s *SMTPMailer) message(msg Mail) (*gomail.Msg, error) {
	if err := checkMail(msg); err != nil {
		return nil, err
	}
	m := gomail.NewMsg(gomail.WithCharset(gomail.CharsetUTF8), gomail.WithNoDefaultUserAgent())
	if err := m.From(s.cfg.From); err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	if err := m.To(msg.To); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	m.Subject(msg.Subject)
	m.SetMessageIDWithValue(msg.MessageID)
	m.SetDate()
	m.SetBodyString(gomail.TypeTextPlain, msg.Text)
	return m, nil
}

// Bounds of a mail.
const (
	MaxSubjectBytes = 998 // RFC 5322's line
	MaxTextBytes    = 32 << 10
)

// checkMail refuses what could inject headers or recipients (CR or LF in a header value)
// and what is not one bare address. Attacked by TestEmailHandler_RefusesHeaderInjection.
func checkMail(m Mail) error {
	var errs []error
	if a, err := mail.ParseAddress(m.To); err != nil || a.Address != m.To || strings.ContainsAny(m.To, "\r\n,;<>") {
		errs = append(errs, errors.New("to: must be one bare address"))
	}
	if strings.ContainsAny(m.Subject, "\r\n") || len(m.Subject) > MaxSubjectBytes || !utf8.ValidString(m.Subject) {
		errs = append(errs, fmt.Errorf("subject: must be one line of valid UTF-8 of at most %d bytes", MaxSubjectBytes))
	}
	if len(m.Text) > MaxTextBytes || !utf8.ValidString(m.Text) {
		errs = append(errs, fmt.Errorf("text: must be valid UTF-8 of at most %d bytes", MaxTextBytes))
	}
	if id := m.MessageID; id == "" || strings.ContainsAny(id, "\r\n<> ") || !strings.Contains(id, "@") || len(id) > 200 {
		errs = append(errs, errors.New("message id: must be one id-left@domain"))
	}
	return errors.Join(errs...)
}

// EmailHandler performs KindEmail rows: the payload (EmailPayload, decoded strictly) is
// sent with mailer, its Message-ID derived from the row's key and from.
func EmailHandler(mailer Mailer, from string) Handler {
	return func(ctx context.Context, job Job) (string, error) {
		var p EmailPayload
		if err := decodeStrict(job.Payload, &p); err != nil {
			return "", Permanent(fmt.Errorf("email payload: %w", err))
		}
		m := Mail{To: p.To, Subject: p.Subject, Text: p.Text, MessageID: MessageID(job.Key, from)}
		if err := checkMail(m); err != nil {
			return "", Permanent(fmt.Errorf("email payload: %w", err))
		}
		if err := mailer.Send(ctx, m); err != nil {
			return "", err
		}
		return "sent <" + m.MessageID + ">", nil
	}
}

// decodeStrict decodes one JSON object of at most MaxPayloadBytes into v, refusing
// unknown fields and trailing data.
func decodeStrict(b []byte, v any) error {
	if len(b) > MaxPayloadBytes {
		return fmt.Errorf("larger than %d bytes", MaxPayloadBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the object")
	}
	return nil
}

// MaxPayloadBytes bounds a decoded payload (the store's bound).
const MaxPayloadBytes = 64 << 10
