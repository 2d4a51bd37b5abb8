package netproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// echo is a TCP server on loopback that echoes each connection and closes it at EOF.
type echo struct {
	addr     netip.AddrPort
	accepted atomic.Int64
}

func startEcho(t *testing.T) *echo {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{addr: l.Addr().(*net.TCPAddr).AddrPort()}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	return e
}

// mapResolver is a real resolver over a fixed table; it counts lookups.
type mapResolver struct {
	names   map[string][]netip.Addr
	lookups atomic.Int64
}

func (r *mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.lookups.Add(1)
	if a, ok := r.names[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

type fixture struct {
	addr     string
	resolver *mapResolver
	mu       sync.Mutex
	denied   []string
	cancel   context.CancelFunc
	done     chan error
}

func (f *fixture) Denials() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.denied...)
}

// startProxy serves a proxy on a loopback port (or l, if not nil) until the test ends.
func startProxy(t *testing.T, allowed []string, mod func(*Config), l net.Listener) *fixture {
	t.Helper()
	f := &fixture{resolver: &mapResolver{names: map[string][]netip.Addr{
		"telemetry.contoso.example": {netip.MustParseAddr("127.0.0.1")},
		"localhost":                 {netip.MustParseAddr("127.0.0.1")},
	}}}
	cfg := DefaultConfig()
	cfg.AllowedHosts = allowed
	cfg.Resolver = f.resolver
	cfg.Denied = func(c string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.denied = append(f.denied, c)
	}
	cfg.HeaderTimeout, cfg.DialTimeout = 2*time.Second, 2*time.Second
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	if l == nil {
		if l, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	f.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- p.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-f.done:
			if err != nil {
				t.Errorf("Serve() = %v, want nil after cancel", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve() did not return after cancel")
		}
	})
	return f
}

// connect sends CONNECT target (followed by early bytes in the same write) and returns
// the connection, a reader positioned after the response header, and the status.
func connect(t *testing.T, network, proxyAddr, target string, early string) (net.Conn, *bufio.Reader, int) {
	t.Helper()
	c, err := net.Dial(network, proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n%s", target, target, early)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
	}
	return c, br, resp.StatusCode
}

func readN(t *testing.T, br *bufio.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(b)
}

func TestProxy_TunnelsToDeclaredIP(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	f := startProxy(t, []string{e.addr.String()}, nil, nil)
	c, br, status := connect(t, "tcp", f.addr, e.addr.String(), "early")
	if status != http.StatusOK {
		t.Fatalf("CONNECT %s = %d, want 200", e.addr, status)
	}
	if got := readN(t, br, 5); got != "early" {
		t.Errorf("echo of the bytes sent with the request = %q, want \"early\"", got)
	}
	fmt.Fprint(c, "later")
	if got := readN(t, br, 5); got != "later" {
		t.Errorf("echo = %q, want \"later\"", got)
	}
	// Half-close: the answer still comes back.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after half-close: %q, %v, want clean EOF", rest, err)
	}
	if got := f.Denials(); len(got) != 0 {
		t.Errorf("Denied(%v) for a declared host", got)
	}
}

func TestProxy_ResolvesDeclaredName(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	port := e.addr.Port()
	f := startProxy(t, []string{fmt.Sprintf("telemetry.contoso.example:%d", port)}, nil, nil)
	for _, target := range []string{fmt.Sprintf("telemetry.contoso.example:%d", port), fmt.Sprintf("Telemetry.CONTOSO.example:%d", port)} {
		c, br, status := connect(t, "tcp", f.addr, target, "")
		if status != http.StatusOK {
			t.Fatalf("CONNECT %s = %d, want 200", target, status)
		}
		fmt.Fprint(c, "ping")
		if got := readN(t, br, 4); got != "ping" {
			t.Errorf("echo through %s = %q", target, got)
		}
	}
}

// TestProxy_RefusesUndeclaredHosts attacks DESIGN rule 6 for the network (ATTACKS row 27):
// every target but the exact declared ones is refused with 403, reported, and never dialed
// or resolved.
func TestProxy_RefusesUndeclaredHosts(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	port := e.addr.Port()
	other := startEcho(t)
	f := startProxy(t, []string{fmt.Sprintf("telemetry.contoso.example:%d", port), fmt.Sprintf("[::1]:%d", port)}, nil, nil)
	targets := []string{
		other.addr.String(),                                 // an undeclared host
		fmt.Sprintf("127.0.0.1:%d", port),                   // the address a declared name resolves to
		fmt.Sprintf("localhost:%d", port),                   // a name that resolves to the same address
		fmt.Sprintf("telemetry.contoso.example:%d", port+1), // a declared name on another port
		fmt.Sprintf("telemetry.contoso.example.:%d", port),  // trailing dot
		fmt.Sprintf("x.telemetry.contoso.example:%d", port),
		fmt.Sprintf("*.contoso.example:%d", port),
		fmt.Sprintf("[::ffff:127.0.0.1]:%d", port), // IPv4-mapped
		fmt.Sprintf("[::2]:%d", port),
		"evil.example:443",
	}
	var want []string
	for _, target := range targets {
		_, _, status := connect(t, "tcp", f.addr, target, "")
		if status != http.StatusForbidden {
			t.Errorf("CONNECT %s = %d, want 403", target, status)
		}
		want = append(want, "host:"+strings.ToLower(target))
	}
	if diff := cmp.Diff(want, f.Denials()); diff != "" {
		t.Errorf("Denied calls mismatch (-want +got):\n%s", diff)
	}
	if n := e.accepted.Load() + other.accepted.Load(); n != 0 {
		t.Errorf("refused targets were dialed %d times", n)
	}
	if n := f.resolver.lookups.Load(); n != 0 {
		t.Errorf("refused names were resolved %d times", n)
	}
	// [::1] and [0::1] are one address; this one is declared (nothing listens there, or
	// IPv6 may be off: either way it is not refused).
	if _, _, status := connect(t, "tcp", f.addr, fmt.Sprintf("[0::1]:%d", port), ""); status == http.StatusForbidden {
		t.Errorf("CONNECT [0::1]:%d = 403, want it allowed as [::1]", port)
	}
}

func TestProxy_RefusesMalformedAndOtherMethods(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	f := startProxy(t, []string{e.addr.String()}, nil, nil)
	for _, tt := range []struct {
		request string
		want    int
	}{
		{fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", e.addr, e.addr), http.StatusMethodNotAllowed},
		{"CONNECT 127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", http.StatusBadRequest},
		{"CONNECT 127.0.0.1:0443 HTTP/1.1\r\nHost: 127.0.0.1:0443\r\n\r\n", http.StatusBadRequest},
		{"CONNECT 127.0.0.1:70000 HTTP/1.1\r\nHost: 127.0.0.1:70000\r\n\r\n", http.StatusBadRequest},
		{"CONNECT " + e.addr.String() + " HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 20) + "\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"garbage\r\n\r\n", http.StatusBadRequest},
	} {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, tt.request)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("%.40q: %v", tt.request, err)
		} else {
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%.40q = %d, want %d", tt.request, resp.StatusCode, tt.want)
			}
		}
		c.Close()
	}
	if n := e.accepted.Load(); n != 0 {
		t.Errorf("malformed requests were dialed %d times", n)
	}
}

func TestProxy_Timeouts(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	f := startProxy(t, []string{e.addr.String()}, func(c *Config) {
		c.HeaderTimeout = 100 * time.Millisecond
		c.IdleTimeout = 400 * time.Millisecond
	}, nil)

	// A client that never finishes its request is cut off.
	slow, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprint(slow, "CONNECT ")
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, _ = io.ReadAll(slow) // a 408 or nothing, then EOF
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("slow request held for %v, want about 100ms", d)
	}

	// A tunnel with no traffic is closed; traffic keeps it open.
	c, br, status := connect(t, "tcp", f.addr, e.addr.String(), "")
	if status != http.StatusOK {
		t.Fatalf("CONNECT = %d", status)
	}
	// Bytes 100ms apart for longer than the idle timeout: the tunnel stays open. (Real
	// sockets: no synctest; the margin is 4x.)
	for range 6 {
		fmt.Fprint(c, "x")
		if got := readN(t, br, 1); got != "x" {
			t.Fatalf("echo = %q", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	start = time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Error("idle tunnel read a byte, want it closed")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("idle tunnel closed after %v, want about 400ms", d)
	}
}

func TestProxy_BoundsTunnels(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	f := startProxy(t, []string{e.addr.String()}, func(c *Config) { c.MaxTunnels = 1 }, nil)
	first, _, status := connect(t, "tcp", f.addr, e.addr.String(), "")
	if status != http.StatusOK {
		t.Fatalf("first CONNECT = %d", status)
	}
	if _, _, status := connect(t, "tcp", f.addr, e.addr.String(), ""); status != http.StatusServiceUnavailable {
		t.Errorf("second CONNECT = %d, want 503", status)
	}
	first.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, status := connect(t, "tcp", f.addr, e.addr.String(), "")
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no tunnel slot after the first closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProxy_UnreachableDeclaredHost(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	f := startProxy(t, []string{closed, "telemetry.contoso.example:1", "gone.contoso.example:443"}, nil, nil)
	for _, target := range []string{closed, "gone.contoso.example:443"} {
		if _, _, status := connect(t, "tcp", f.addr, target, ""); status != http.StatusBadGateway {
			t.Errorf("CONNECT %s = %d, want 502", target, status)
		}
	}
	if got := f.Denials(); len(got) != 0 {
		t.Errorf("Denied(%v) for declared hosts", got)
	}
}

func TestProxy_ServeOnUnixSocketAndStop(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	dir, err := os.MkdirTemp("", "netproxy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "proxy.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := startProxy(t, []string{e.addr.String()}, nil, l)
	c, br, status := connect(t, "unix", sock, e.addr.String(), "hi")
	if status != http.StatusOK || readN(t, br, 2) != "hi" {
		t.Fatalf("CONNECT over the Unix socket = %d", status)
	}
	// Stopping Serve closes open tunnels.
	f.cancel()
	if err := <-f.done; err != nil {
		t.Errorf("Serve() = %v", err)
	}
	f.done <- nil // for the cleanup
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Error("tunnel open after Serve returned")
	}
}

func TestNew_RejectsBadConfig(t *testing.T) {
	t.Parallel()
	_, err := New(Config{AllowedHosts: []string{"nohost", "a:0", "[fe80::1%eth0]:1", "a b:1"}})
	if err == nil {
		t.Fatal("New() = nil error")
	}
	for _, s := range []string{"allowed_hosts[0]", "allowed_hosts[1]", "allowed_hosts[2]", "allowed_hosts[3]", "denied", "resolver", "dial", "header_timeout", "idle_timeout", "max_tunnels"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("New() = %v, want it to name %s", err, s)
		}
	}
}
