package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ListenError is Open's error when it cannot bind an address. Flag names the setting
// (addr or device-addr), so a caller such as the demo can retry that one elsewhere: Open
// binds before it touches the data directory, so a retry starts from the same state.
type ListenError struct {
	Flag string
	Addr string
	Err  error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("%s: listen on %s: %v", e.Flag, e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

func listen(ctx context.Context, flag, addr string) (net.Listener, error) {
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, &ListenError{Flag: flag, Addr: addr, Err: err}
	}
	return ln, nil
}

// baseURL is the https URL clients use for a bound listener: an unspecified host
// (0.0.0.0, ::) becomes 127.0.0.1.
func baseURL(ln net.Listener) string {
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port)
}

// cipherSuites are the only TLS 1.2 suites either listener accepts: ECDHE key exchange
// (forward secrecy) with an AEAD cipher. Go's defaults also offer CBC suites with SHA-1
// MACs (defect 9; attacked by TestServer_TLS12RefusesCBCSuites). TLS 1.3 suites are all
// AEAD and not configurable.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, // an operator's --tls-cert may be RSA
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// listenerTLS returns the two listeners' TLS configurations around one certificate. The
// management listener never asks for a client certificate, so a browser is never asked
// (DESIGN, Listeners; attacked by TestServer_ManagementAsksNoClientCertificate). The device
// listener asks for one but does not verify it in the handshake: the device routes verify
// chains against each tenant's CA (internal/fleet), which one handshake-time pool cannot.
func listenerTLS(cert tls.Certificate) (mgmt, device *tls.Config) {
	base := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: cipherSuites,
		Certificates: []tls.Certificate{cert},
	}
	mgmt = base.Clone()
	mgmt.ClientAuth = tls.NoClientCert
	device = base.Clone()
	device.ClientAuth = tls.RequestClientCert
	return mgmt, device
}

// hstsValue tells browsers to reach the management listener over HTTPS only, for a year.
// No includeSubDomains: the server does not know what else runs under its parent domain.
const hstsValue = "max-age=31536000"

// withHSTS sets Strict-Transport-Security on every response of the management listener
// (defect 9; attacked by TestServer_ManagementSendsHSTS).
func withHSTS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", hstsValue)
		h.ServeHTTP(w, r)
	})
}

// Limits of both listeners: a client must send its headers within ReadHeaderTimeout and
// its whole request within ReadTimeout, so a slow client cannot hold a connection and its
// buffers for long. WriteTimeout is above the device long-poll (50 s).
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
)

func newHTTPServer(ctx context.Context, h http.Handler, log *slog.Logger, connContext func(context.Context, net.Conn) context.Context) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext:       connContext,
	}
}
