package sim

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"time"
)

// Per-connection memory is what decides how many devices fit in one process: a device
// holds one HTTP/1.1 connection (two goroutines, a bufio reader and writer, the TLS
// state), so the buffers are small (a device's requests are a few hundred bytes; longer
// header lines and bodies pass through bufio unbuffered) and a device keeps at most one
// idle connection. HTTP/2 would add a framer and flow-control buffers per connection for
// nothing: a device sends one request at a time.
const (
	deviceBufferBytes = 1 << 10
	idleTimeout       = 2 * time.Minute // longer than the 50 s long-poll, so the connection stays
	headerTimeout     = 90 * time.Second
)

// newSharedTransport is the transport of the clients all devices share (the management
// API, attestation): no client certificate, a few kept-alive connections.
func newSharedTransport(cas *x509.CertPool) *http.Transport {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: cas, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: headerTimeout,
		IdleConnTimeout:       idleTimeout,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
	}
}

// newDeviceTransport is one device's mutual-TLS transport: it presents whatever
// certificate cert returns at each handshake.
func newDeviceTransport(cas *x509.CertPool, cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *http.Transport {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: cas, MinVersion: tls.VersionTLS12, GetClientCertificate: cert},
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: headerTimeout,
		IdleConnTimeout:       idleTimeout,
		MaxIdleConns:          1,
		MaxIdleConnsPerHost:   1,
		ReadBufferSize:        deviceBufferBytes,
		WriteBufferSize:       deviceBufferBytes,
	}
}

// newHTTPClient never follows redirects: requests stay on the configured server.
func newHTTPClient(tr http.RoundTripper) *http.Client {
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
