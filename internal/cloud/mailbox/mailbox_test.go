package mailbox_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/mailbox"
)

func serverTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, pool
}

func start(t *testing.T, cfg mailbox.Config) *mailbox.Mailbox {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	mb, err := mailbox.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	return mb
}

// send delivers raw over STARTTLS (when pool is set).
func send(t *testing.T, addr string, pool *x509.CertPool, raw string) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if pool != nil {
		if err := c.StartTLS(&tls.Config{ServerName: "127.0.0.1", RootCAs: pool, MinVersion: tls.VersionTLS12}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Mail("moat@cloud.example"); err != nil {
		return err
	}
	if err := c.Rcpt("owner@home.example"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(raw)); err != nil {
		return err
	}
	return w.Close()
}

func msg(id, subject, body string) string {
	return "Message-ID: <" + id + ">\r\nSubject: " + subject + "\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n" + body + "\r\n"
}

func TestMailbox_KeepsOneCopyPerMessageID(t *testing.T) {
	t.Parallel()
	cfg, pool := serverTLS(t)
	mb := start(t, mailbox.Config{TLSConfig: cfg, RequireTLS: true, RefuseFirst: 1})
	if err := send(t, mb.Addr(), pool, msg("a@x", "first", "one")); err == nil || !strings.Contains(err.Error(), "451") {
		t.Errorf("first transaction = %v, want 451", err)
	}
	for range 2 {
		if err := send(t, mb.Addr(), pool, msg("a@x", "first", "one")); err != nil {
			t.Fatal(err)
		}
	}
	if err := send(t, mb.Addr(), pool, msg("b@x", "=?UTF-8?q?=C3=9Cber?=", "two")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	msgs, err := mb.Wait(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].MessageID != "a@x" || msgs[1].Subject != "Über" || msgs[1].Body != "two\n" || !msgs[0].TLS {
		t.Errorf("messages = %+v", msgs)
	}
	if st := mb.Stats(); st.Transactions != 3 || st.Refused != 1 || st.MailCommands != 4 {
		t.Errorf("Stats = %+v, want 3 transactions, 1 refused, 4 MAIL", st)
	}
}

func TestMailbox_RefusesMailBeforeSTARTTLS(t *testing.T) {
	t.Parallel()
	cfg, _ := serverTLS(t)
	mb := start(t, mailbox.Config{TLSConfig: cfg, RequireTLS: true})
	if err := send(t, mb.Addr(), nil, msg("a@x", "s", "clear")); err == nil || !strings.Contains(err.Error(), "530") {
		t.Errorf("send without STARTTLS = %v, want 530", err)
	}
	if n := len(mb.Messages()); n != 0 {
		t.Errorf("kept %d messages, want 0", n)
	}
}

func TestMailbox_Bounded(t *testing.T) {
	t.Parallel()
	mb := start(t, mailbox.Config{MaxMessages: 1, MaxMessageBytes: 1024})
	if err := send(t, mb.Addr(), nil, msg("big@x", "s", strings.Repeat("a", 2048))); err == nil {
		t.Error("send(2 KiB to a 1 KiB mailbox) = nil, want an error")
	}
	if err := send(t, mb.Addr(), nil, msg("a@x", "s", "t")); err != nil {
		t.Fatal(err)
	}
	if err := send(t, mb.Addr(), nil, msg("b@x", "s", "t")); err == nil || !strings.Contains(err.Error(), "452") {
		t.Errorf("send(past MaxMessages) = %v, want 452", err)
	}
}

func TestConfig_RefusesNonLoopback(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:2525", "192.0.2.1:25", ":25", "mail.example:25"} {
		if err := (mailbox.Config{Addr: addr, Logger: slog.New(slog.DiscardHandler)}).Validate(); err == nil {
			t.Errorf("Validate(%s) = nil, want an error", addr)
		}
	}
}
