package attestation

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/moat-iot/moat/client"
)

// TLSConfig returns a new TLS configuration for the device's mutual TLS: it trusts only
// Config.ServerCAs, speaks TLS 1.2 or later, judges certificates by Config.Now, and presents
// the certificate Certificate returns at every handshake (waiting at most 30 s for an
// attestation). The caller may change its copy, for example RootCAs or ServerName for
// another service that trusts the tenant CA.
func (c *Client) TLSConfig() *tls.Config { return c.tls.Clone() }

// HTTPClient returns the Client's HTTP client for the device API: mutual TLS with
// TLSConfig, redirects not followed. Before each request it makes sure the certificate is
// current (Certificate with the request's context), and after each renewal or refusal it
// closes idle connections, so a pooled connection does not keep presenting an old
// certificate. The same *http.Client is returned every time.
func (c *Client) HTTPClient() *http.Client { return c.hc }

// API returns the public API client on HTTPClient, for the device routes (GetDeviceSelf,
// GetAssignment, ...). The same *client.Client is returned every time.
func (c *Client) API() *client.Client { return c.api }

// getClientCertificate is the handshake's hook: the current certificate, attesting if due.
func (c *Client) getClientCertificate(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(cri.Context(), handshakeTimeout)
	defer cancel()
	cert, err := c.Certificate(ctx)
	if err != nil {
		return nil, fmt.Errorf("device client certificate: %w", err)
	}
	return &cert, nil
}

// freshTransport renews a due certificate before a request; Certificate then closes the
// idle connections that present the old one.
type freshTransport struct {
	c    *Client
	next http.RoundTripper
}

func (t *freshTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if _, err := t.c.Certificate(r.Context()); err != nil {
		if r.Body != nil {
			r.Body.Close() // RoundTrip must close the body, even on errors
		}
		return nil, fmt.Errorf("device client certificate: %w", err)
	}
	return t.next.RoundTrip(r)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the transport.
func (t *freshTransport) CloseIdleConnections() { t.c.mtr.CloseIdleConnections() }

// newTransport is an HTTP transport with cfg and bounded waits, and no proxy from the
// environment (explicit over ambient).
func newTransport(cfg *tls.Config) *http.Transport {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		TLSClientConfig:       cfg,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   handshakeTimeout + 10*time.Second, // room for an attestation
		ResponseHeaderTimeout: time.Minute,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          4,
	}
}

// noRedirect keeps requests on the configured server.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
