package cloudlink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Session timing.
const (
	certTimeout    = time.Minute // waiting for the attestation client
	connectTimeout = 30 * time.Second
	keepAlive      = time.Minute
	// window bounds the messages published and not yet acknowledged.
	window = 16
)

var (
	// errRenewed ends a session whose certificate is no longer the current one.
	errRenewed = errors.New("the device certificate changed")
	// errWasUp marks a session that was established before it ended: the next attempt
	// starts from the shortest backoff.
	errWasUp = errors.New("session was up")
)

// certID is what tells two certificates apart.
type certID struct {
	serial   *big.Int
	notAfter time.Time
}

func (a certID) same(b certID) bool {
	return a.serial != nil && b.serial != nil && a.serial.Cmp(b.serial) == 0 && a.notAfter.Equal(b.notAfter)
}

func (l *Link) certificate(ctx context.Context) (tls.Certificate, certID, error) {
	ctx, cancel := context.WithTimeout(ctx, certTimeout)
	defer cancel()
	cert, err := l.cfg.Certificate(ctx)
	if err != nil {
		return tls.Certificate{}, certID{}, fmt.Errorf("device certificate: %w", err)
	}
	if cert.Leaf == nil {
		if len(cert.Certificate) == 0 {
			return tls.Certificate{}, certID{}, errors.New("device certificate: empty")
		}
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, certID{}, fmt.Errorf("device certificate: %w", err)
		}
	}
	return cert, certID{serial: cert.Leaf.SerialNumber, notAfter: cert.Leaf.NotAfter}, nil
}

// lostSignal is closed once when paho reports the connection lost.
type lostSignal struct {
	once sync.Once
	ch   chan struct{}
	err  error
}

func (s *lostSignal) set(err error) {
	s.once.Do(func() { s.err = err; close(s.ch) })
}

// session connects once and serves the session until it ends: the connection is lost
// (errWasUp), the certificate changed (errRenewed) or ctx is done.
func (l *Link) session(ctx context.Context) error {
	cert, id, err := l.certificate(ctx)
	if err != nil {
		return err
	}
	lost := &lostSignal{ch: make(chan struct{})}
	c := mqtt.NewClient(l.options(ctx, cert, lost))
	tok := c.Connect()
	if err := wait(ctx, tok, nil); err != nil {
		c.Disconnect(0)
		return fmt.Errorf("connect to %s: %w", l.broker.Host, err)
	}
	l.connects.Add(1)
	l.log.InfoContext(ctx, "cloud link connected", "broker", l.broker.Host, "serial", fmt.Sprintf("%x", id.serial), "not_after", id.notAfter)
	err = l.serve(ctx, c, id, lost)
	if !errors.Is(err, errLost) {
		c.Disconnect(250)
	}
	if errors.Is(err, errRenewed) {
		return err
	}
	return fmt.Errorf("%w: %w", errWasUp, err)
}

var errLost = errors.New("connection lost")

// options is one connection's paho configuration: the session persists on the broker
// (clean session false) while this process makes a new client for every connection, so
// the only copy of an unacknowledged message is the queue's file, sent again after a
// reconnect, and paho never resends one from memory as well.
func (l *Link) options(ctx context.Context, cert tls.Certificate, lost *lostSignal) *mqtt.ClientOptions {
	tcfg := &tls.Config{
		RootCAs: l.cfg.CAs, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		ServerName: l.broker.Hostname(), Time: l.cfg.Now,
	}
	o := mqtt.NewClientOptions()
	o.AddBroker(l.cfg.Broker)
	o.SetClientID(l.cfg.DeviceID)
	o.SetUsername(l.cfg.Product)
	o.SetProtocolVersion(4) // MQTT 3.1.1
	o.SetCleanSession(false)
	o.SetAutoReconnect(false) // Run reconnects, with a fresh certificate check each time
	o.SetConnectRetry(false)
	o.SetKeepAlive(keepAlive)
	o.SetConnectTimeout(connectTimeout)
	o.SetWriteTimeout(connectTimeout)
	o.SetTLSConfig(tcfg)
	// Dial directly, with ctx: no proxy from the environment (the app's proxy variables are
	// the app's), no wait past Run's end.
	o.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: connectTimeout, KeepAlive: keepAlive}, Config: tcfg}
		return d.DialContext(ctx, "tcp", u.Host)
	})
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost.set(err) })
	handler := l.requestHandler(ctx)
	o.SetDefaultPublishHandler(handler) // requests the broker delivers for the stored session
	return o
}

// wait waits for tok, ctx or lost.
func wait(ctx context.Context, tok mqtt.Token, lost *lostSignal) error {
	var lc chan struct{}
	if lost != nil {
		lc = lost.ch
	}
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-lc:
		return fmt.Errorf("%w: %w", errLost, lost.err)
	}
}

// serve subscribes to the device's diagnostics requests, then sends the queue and watches
// the certificate until the session ends.
func (l *Link) serve(ctx context.Context, c mqtt.Client, id certID, lost *lostSignal) error {
	st := c.Subscribe(telemetry.DiagnosticsFilter(l.cfg.DeviceID), 1, l.requestHandler(ctx))
	if err := wait(ctx, st, lost); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if st, ok := st.(*mqtt.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code > 1 {
				return fmt.Errorf("subscribe %s: refused by the broker (%#x)", f, code)
			}
		}
	}
	tick := time.NewTicker(l.cfg.CertCheckInterval)
	defer tick.Stop()
	for {
		if err := l.sendQueue(ctx, c, lost); err != nil {
			return err
		}
		// The channel first, then the check: a renewal between the two still wakes the
		// select below.
		var changed <-chan struct{}
		if l.cfg.CertificateChanged != nil {
			changed = l.cfg.CertificateChanged()
		}
		if _, now, err := l.certificate(ctx); err == nil && !now.same(id) {
			// Enforces the renewal rule: the broker must see the certificate the device
			// holds now, never one that the service might have stopped renewing. Attacked
			// by TestLink_ReconnectsWithRenewedCertificate.
			l.log.InfoContext(ctx, "device certificate renewed: reconnecting to the cloud", "serial", fmt.Sprintf("%x", now.serial))
			return errRenewed
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-lost.ch:
			return fmt.Errorf("%w: %w", errLost, lost.err)
		case <-l.kick:
		case <-changed:
		case <-l.certK:
		case <-tick.C:
		}
	}
}

// sendQueue publishes the queue, window messages at a time, deleting each message once
// the broker acknowledged it, paced by PublishRate.
func (l *Link) sendQueue(ctx context.Context, c mqtt.Client, lost *lostSignal) error {
	for {
		es, data, err := l.q.next(window, func(uint64) bool { return false })
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return nil
		}
		if err := l.pace.WaitN(ctx, min(len(es), l.cfg.PublishBurst)); err != nil {
			return err
		}
		toks := make([]mqtt.Token, len(es))
		for i, e := range es {
			toks[i] = c.Publish(e.topic(l.cfg.DeviceID), 1, false, data[i])
		}
		for i, tok := range toks {
			if err := wait(ctx, tok, lost); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			if err := l.q.ack(es[i].seq); err != nil {
				return err
			}
			l.sent.Add(1)
		}
	}
}
