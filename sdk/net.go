package sdk

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// Network errors.
var (
	// ErrHostDenied: the manifest does not declare the host:port (the proxy answered 403).
	ErrHostDenied = errors.New("host not declared in the app manifest")
	// ErrNoNetwork: the runtime gave the app no proxy ($HTTPS_PROXY is not set): the
	// manifest declares no hosts.
	ErrNoNetwork = errors.New("no network for this app: HTTPS_PROXY is not set")
)

// Dial connects to address ("host:port", exactly as the manifest's allowed_hosts lists it)
// through the runtime's proxy: an HTTP CONNECT tunnel to $HTTPS_PROXY. network must be
// "tcp". Its signature fits net/http's Transport.DialContext and most client libraries'
// dialer hooks (MQTT, gRPC).
func Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, fmt.Errorf("dial %s %s: only tcp goes through the moat proxy", network, address)
	}
	proxy, err := proxyAddr()
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, fmt.Errorf("dial %s: proxy: %w", address, err)
	}
	c, err := connect(ctx, conn, address)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	return c, nil
}

// proxyAddr returns host:port of $HTTPS_PROXY (or $https_proxy).
func proxyAddr() (string, error) {
	v := os.Getenv("HTTPS_PROXY")
	if v == "" {
		v = os.Getenv("https_proxy")
	}
	if v == "" {
		return "", ErrNoNetwork
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.Port() == "" {
		return "", fmt.Errorf("HTTPS_PROXY %q is not http://host:port", v)
	}
	return u.Host, nil
}

// connect asks the proxy on conn for a tunnel to address.
func connect(ctx context.Context, conn net.Conn, address string) (net.Conn, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", address, address); err != nil {
		return nil, proxyErr(ctx, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, proxyErr(ctx, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden {
			return nil, ErrHostDenied
		}
		return nil, fmt.Errorf("proxy answered %s", resp.Status)
	}
	if !stop() {
		return nil, context.Cause(ctx)
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

func proxyErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return fmt.Errorf("proxy: %w", err)
}

// bufferedConn reads first what the proxy's reply left in the buffer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// HTTPClient returns an HTTP client whose connections, http and https alike, are tunnels
// made by [Dial]: it reaches only the hosts the manifest declares.
func HTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // Dial tunnels already
			DialContext:         Dial,
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 15 * time.Second,
			IdleConnTimeout:     90 * time.Second,
		},
		Timeout: 60 * time.Second,
	}
}
