package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/mailbox"
	"github.com/moat-iot/moat/internal/cloud/outbox"
)

const from = "moat@cloud.example"

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

func TestSMTPConfig_Validate(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]outbox.SMTPConfig{
		"no addr":              {From: from},
		"display name in from": {Addr: "mail.example:587", From: "Moat <moat@cloud.example>"},
		"clear text to remote": {Addr: "mail.example:25", From: from, TLS: outbox.SMTPNoTLS},
		"unknown tls":          {Addr: "mail.example:587", From: from, TLS: "opportunistic"},
		"user without pass":    {Addr: "mail.example:587", From: from, Username: "u"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", name)
		}
	}
	for _, c := range []outbox.SMTPConfig{
		{Addr: "mail.example:587", From: from},
		{Addr: "127.0.0.1:25", From: from, TLS: outbox.SMTPNoTLS},
		{Addr: "mail.example:465", From: from, TLS: outbox.SMTPImplicitTLS, Username: "u", PasswordFile: "/p"},
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
}

func TestMessageID_StablePerKey(t *testing.T) {
	t.Parallel()
	a, b := outbox.MessageID("alert-1-notify", from), outbox.MessageID("alert-1-notify", from)
	if a != b || !strings.HasSuffix(a, "@cloud.example") || strings.Contains(a, "alert") {
		t.Errorf("MessageID = %q, %q, want the same opaque id at the sender's domain", a, b)
	}
	if outbox.MessageID("alert-2-notify", from) == a {
		t.Error("two keys gave one Message-ID")
	}
}

func emailJob(key string, p outbox.EmailPayload) outbox.Job {
	b, _ := json.Marshal(p)
	return outbox.Job{ID: 1, Kind: outbox.KindEmail, Key: key, Payload: b, Attempt: 1}
}

// A notification is retried until the SMTP server accepts it (the server refuses the
// first three with 451), and the mailbox then holds it once.
func TestMail_RetriedUntilAcceptedAndDeliveredOnce(t *testing.T) {
	t.Parallel()
	pki := newPKI(t, t.TempDir())
	mb := startMailbox(t, pki, 3)
	s := openStore(t, "")
	c := &clock{now: t0}
	w := newWorker(t, s, outbox.Handlers{outbox.KindEmail: outbox.EmailHandler(newMailer(t, mb.Addr(), pki.caFile), from)}, c.Now, nil)
	enqueue(t, s, t0, outbox.KindEmail, "alert-7-notify", outbox.EmailPayload{To: "owner@home.example",
		Subject: "Dishwasher: drying too hot — Überhitzung", Text: "Your dishwasher dw100 reported 91.5 °C.\nWe opened a service request."})
	for i := range 6 {
		if _, err := w.RunOnce(t.Context()); err != nil {
			t.Fatalf("RunOnce #%d = %v", i, err)
		}
		c.Advance(2 * time.Hour)
	}
	r := row(t, s, "alert-7-notify")
	if r.State != cloudstore.OutboxDone || r.Attempts != 4 || !strings.Contains(r.LastError, "451") {
		t.Errorf("row = %+v, want done at attempt 4 after 451s", r)
	}
	msgs := mb.Messages()
	st := mb.Stats()
	if len(msgs) != 1 || st.Refused != 3 || st.Transactions != 1 {
		t.Fatalf("mailbox: %d messages, %+v, want 1 message after 3 refusals", len(msgs), st)
	}
	m := msgs[0]
	if m.MessageID != outbox.MessageID("alert-7-notify", from) || m.Subject != "Dishwasher: drying too hot — Überhitzung" ||
		strings.TrimSuffix(m.Body, "\n") != "Your dishwasher dw100 reported 91.5 °C.\nWe opened a service request." || !m.TLS ||
		len(m.To) != 1 || m.To[0] != "owner@home.example" || m.From != from || m.Header.Get("Date") == "" ||
		!strings.HasPrefix(m.Header.Get("Content-Type"), "text/plain; charset=UTF-8") {
		t.Errorf("message = %+v", m)
	}
}

// STARTTLS is mandatory: a server (or a man in the middle) that does not offer it gets
// an error, and no envelope or message in the clear.
func TestMail_RefusesServerWithoutSTARTTLS(t *testing.T) {
	t.Parallel()
	pki := newPKI(t, t.TempDir())
	mb, err := mailbox.Start(t.Context(), mailbox.Config{Addr: "127.0.0.1:0", Logger: testLogger(t)}) // no TLS offered
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	err = newMailer(t, mb.Addr(), pki.caFile).Send(t.Context(), outbox.Mail{To: "owner@home.example", Subject: "s", Text: "secret text",
		MessageID: outbox.MessageID("k", from)})
	if err == nil || outbox.IsPermanent(err) || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("Send(no STARTTLS) = %v, want a retryable STARTTLS error", err)
	}
	if st := mb.Stats(); st.MailCommands != 0 || st.Transactions != 0 {
		t.Errorf("server saw %+v, want no MAIL command and no message", st)
	}
}

// The server's certificate must chain to the system roots or CAFile.
func TestMail_RefusesUntrustedCertificate(t *testing.T) {
	t.Parallel()
	pki := newPKI(t, t.TempDir())
	other := newPKI(t, t.TempDir())
	mb := startMailbox(t, pki, 0)
	err := newMailer(t, mb.Addr(), other.caFile).Send(t.Context(), outbox.Mail{To: "owner@home.example", Subject: "s", Text: "t",
		MessageID: outbox.MessageID("k", from)})
	if err == nil {
		t.Error("Send(untrusted certificate) = nil, want an error")
	}
	if st := mb.Stats(); st.MailCommands != 0 {
		t.Errorf("server saw %+v, want no MAIL command", st)
	}
}

// Header injection: CR or LF in a recipient or subject could add recipients or headers.
func TestEmailHandler_RefusesHeaderInjection(t *testing.T) {
	t.Parallel()
	pki := newPKI(t, t.TempDir())
	mb := startMailbox(t, pki, 0)
	h := outbox.EmailHandler(newMailer(t, mb.Addr(), pki.caFile), from)
	for name, p := range map[string]outbox.EmailPayload{
		"to with CRLF":      {To: "owner@home.example\r\nBcc: victim@else.example", Subject: "s", Text: "t"},
		"to with LF":        {To: "owner@home.example\nBcc: victim@else.example", Subject: "s", Text: "t"},
		"two recipients":    {To: "owner@home.example, victim@else.example", Subject: "s", Text: "t"},
		"display name":      {To: "Owner <owner@home.example>", Subject: "s", Text: "t"},
		"subject with CRLF": {To: "owner@home.example", Subject: "hi\r\nBcc: victim@else.example", Text: "t"},
		"subject with LF":   {To: "owner@home.example", Subject: "hi\nX-Evil: 1", Text: "t"},
		"subject too long":  {To: "owner@home.example", Subject: strings.Repeat("s", 999), Text: "t"},
	} {
		_, err := h(t.Context(), emailJob("k", p))
		if err == nil || !outbox.IsPermanent(err) {
			t.Errorf("%s: handler = %v, want a permanent error", name, err)
		}
	}
	for name, raw := range map[string]string{
		"unknown field": `{"to":"owner@home.example","subject":"s","text":"t","bcc":"victim@else.example"}`,
		"trailing data": `{"to":"owner@home.example","subject":"s","text":"t"}{}`,
		"not an object": `[]`,
	} {
		_, err := h(t.Context(), outbox.Job{Kind: outbox.KindEmail, Key: "k", Payload: json.RawMessage(raw)})
		if err == nil || !outbox.IsPermanent(err) {
			t.Errorf("%s: handler = %v, want a permanent error", name, err)
		}
	}
	if st := mb.Stats(); st.MailCommands != 0 {
		t.Errorf("server saw %+v, want nothing sent", st)
	}
	// The mailer itself refuses too, for callers that build a Mail by hand (actions).
	for name, m := range map[string]outbox.Mail{
		"subject with CRLF":    {To: "owner@home.example", Subject: "a\r\nBcc: v@else.example", Text: "t"},
		"to with CRLF":         {To: "owner@home.example\r\nBcc: v@else.example", Subject: "s", Text: "t"},
		"bad utf-8":            {To: "owner@home.example", Subject: "s", Text: "\xff"},
		"message id with CRLF": {To: "owner@home.example", Subject: "s", Text: "t", MessageID: "a@b\r\nBcc: v@else.example"},
	} {
		if m.MessageID == "" {
			m.MessageID = outbox.MessageID("k", from)
		}
		if err := newMailer(t, mb.Addr(), pki.caFile).Send(t.Context(), m); !outbox.IsPermanent(err) {
			t.Errorf("Send(%s) = %v, want a permanent error", name, err)
		}
	}
	if st := mb.Stats(); st.MailCommands != 0 {
		t.Errorf("server saw %+v, want nothing sent", st)
	}
}

// A 5xx answer to the recipient is permanent; a 4xx is not.
func TestMail_ClassifiesAnswers(t *testing.T) {
	t.Parallel()
	pki := newPKI(t, t.TempDir())
	mb := startMailbox(t, pki, 1)
	m := newMailer(t, mb.Addr(), pki.caFile)
	err := m.Send(t.Context(), outbox.Mail{To: "owner@home.example", Subject: "s", Text: "t", MessageID: outbox.MessageID("k", from)})
	if err == nil || outbox.IsPermanent(err) {
		t.Errorf("Send(451) = %v, want a retryable error", err)
	}
	// Nothing listens: a connection error is retryable.
	dead := newMailer(t, "127.0.0.1:1", pki.caFile)
	if err := dead.Send(t.Context(), outbox.Mail{To: "owner@home.example", Subject: "s", Text: "t", MessageID: outbox.MessageID("k", from)}); err == nil || outbox.IsPermanent(err) {
		t.Errorf("Send(no server) = %v, want a retryable error", err)
	}
}

// Delivered exactly once even when moat cloud is killed between sending and recording:
// a child process (this test binary) claims the row, sends the mail and SIGKILLs itself
// before it can record anything. After the lease, a worker here sends it again with the
// same Message-ID, and the mailbox keeps one message out of two transactions.
func TestMail_DeliveredOnceWhenKilledBetweenSendAndRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pki := newPKI(t, dir)
	mb := startMailbox(t, pki, 0)
	dbPath := filepath.Join(dir, "cloud.db")
	s := openStore(t, dbPath)
	start := time.Now()
	enqueue(t, s, start, outbox.KindEmail, "alert-9-notify", outbox.EmailPayload{To: "owner@home.example", Subject: "Leak detected", Text: "Water under the dishwasher."})

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", "CRASH_DB="+dbPath, "CRASH_SMTP="+mb.Addr(), "CRASH_CA="+pki.caFile)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child = %v, want it killed by SIGKILL; output:\n%s", err, out)
	}
	if st := mb.Stats(); st.Transactions != 1 {
		t.Fatalf("after the crash the mailbox saw %+v, want the first send", st)
	}
	r := row(t, s, "alert-9-notify")
	if r.State != cloudstore.OutboxPending || r.Attempts != 1 {
		t.Fatalf("row after the crash = %+v, want pending, attempt 1 unrecorded", r)
	}
	// Before the lease ends nobody takes the row; after it, this worker does.
	mailer := newMailer(t, mb.Addr(), pki.caFile)
	early := newWorker(t, s, outbox.Handlers{outbox.KindEmail: outbox.EmailHandler(mailer, from)}, func() time.Time { return start.Add(time.Second) }, nil)
	if n, err := early.RunOnce(t.Context()); n != 0 || err != nil {
		t.Fatalf("RunOnce(during the dead worker's lease) = %d, %v, want 0", n, err)
	}
	later := newWorker(t, s, outbox.Handlers{outbox.KindEmail: outbox.EmailHandler(mailer, from)}, func() time.Time { return start.Add(crashLease + time.Minute) }, nil)
	if n, err := later.RunOnce(t.Context()); n != 1 || err != nil {
		t.Fatalf("RunOnce(after the lease) = %d, %v, want the row", n, err)
	}
	if r := row(t, s, "alert-9-notify"); r.State != cloudstore.OutboxDone || r.Attempts != 2 {
		t.Errorf("row = %+v, want done at attempt 2", r)
	}
	msgs, st := mb.Messages(), mb.Stats()
	if len(msgs) != 1 || st.Transactions != 2 || msgs[0].MessageID != outbox.MessageID("alert-9-notify", from) {
		t.Errorf("mailbox: %d messages, %+v, want one message (Message-ID %s) out of two transactions", len(msgs), st, outbox.MessageID("alert-9-notify", from))
	}
}

const (
	crashChildEnv = "MOAT_OUTBOX_CRASH_CHILD"
	crashLease    = 2 * time.Minute
)

// killAfterSend sends, then kills its own process before the worker can record it.
type killAfterSend struct{ m outbox.Mailer }

func (k killAfterSend) Send(ctx context.Context, m outbox.Mail) error {
	if err := k.m.Send(ctx, m); err != nil {
		return err
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // never returns: the signal ends the process
}

// crashChild is the child of TestMail_DeliveredOnceWhenKilledBetweenSendAndRecord.
func crashChild() int {
	ctx := context.Background()
	s, err := cloudstore.OpenSQLite(ctx, os.Getenv("CRASH_DB"))
	if err != nil {
		return 3
	}
	m, err := outbox.NewSMTPMailer(outbox.SMTPConfig{Addr: os.Getenv("CRASH_SMTP"), From: from, CAFile: os.Getenv("CRASH_CA")})
	if err != nil {
		return 4
	}
	w, err := outbox.New(outbox.Config{Store: s, Handlers: outbox.Handlers{outbox.KindEmail: outbox.EmailHandler(killAfterSend{m}, from)},
		Now: time.Now, Logger: discardLogger(), Lease: crashLease})
	if err != nil {
		return 5
	}
	if _, err := w.RunOnce(ctx); err != nil {
		return 6
	}
	return 7 // the handler should have killed the process
}
