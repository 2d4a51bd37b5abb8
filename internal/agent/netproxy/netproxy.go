// Package netproxy is an application's only way to the network: an HTTP CONNECT proxy that
// opens a TCP tunnel to a host only if the app's manifest lists it in AllowedHosts.
//
// # What it enforces
//
// Enforces DESIGN rule 6 for network hosts; attacked by TestProxy_RefusesUndeclaredHosts
// and, from a sandboxed process, by sandbox.TestSandbox_RefusesUndeclaredGPIOAndHost.
//
//   - Only CONNECT host:port is served; any other method is 405. The target must be exactly
//     one of Config.AllowedHosts. A DNS name matches case-insensitively but otherwise
//     exactly: no wildcards, no suffixes, no trailing dot, and a name never matches an IP
//     address it resolves to, nor an IP literal a name. An IP literal matches an allowed
//     IP literal of the same address and port (so [::1] and [0::1] are one); an
//     IPv4-mapped IPv6 address is not its IPv4 address. Everything else is refused with
//     403 and reported through Config.Denied as "host:<host:port>".
//   - A DNS name is resolved by the proxy, never by the app, so the app cannot choose the
//     address: the proxy dials the addresses the resolver returns, in order. It trusts the
//     resolver (the device's DNS) to answer for the names the tenant declared.
//   - The request header is bounded (Config.MaxHeaderBytes, plus net/http's 4 KiB slack)
//     and must arrive within Config.HeaderTimeout; a dial gets Config.DialTimeout; a tunnel
//     with no traffic either way for Config.IdleTimeout is closed; at most
//     Config.MaxTunnels tunnels are open at once (503 beyond).
//
// Whether the app can bypass the proxy depends on the sandbox, not on this package:
// docs/app-sandbox.md says what each sandbox mode enforces.
//
// # Concurrency
//
// A Proxy is safe for concurrent use; [Proxy.Serve] may run on several listeners at once
// (a TCP one and a Unix one, say).
package netproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Resolver resolves a DNS name; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config configures a Proxy. Every field without "optional" is required; DefaultConfig
// fills all but AllowedHosts and Denied.
type Config struct {
	// AllowedHosts are the manifest's "host:port" pairs.
	AllowedHosts []string
	// Denied is called, synchronously, for every refused target, with "host:" and the
	// target as the app sent it (lower-cased, cut at 300 bytes, non-printable bytes
	// replaced). The runtime coalesces before queueing error reports.
	Denied func(capability string)
	// Resolver resolves allowed DNS names.
	Resolver Resolver
	// Dial opens the upstream TCP connection to an IP address and port.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HeaderTimeout bounds reading a CONNECT request.
	HeaderTimeout time.Duration
	// DialTimeout bounds resolving and dialing one target.
	DialTimeout time.Duration
	// IdleTimeout closes a tunnel with no traffic in either direction for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
	// MaxTunnels bounds the tunnels open at once.
	MaxTunnels int
	// Logger, optional, receives refusals and failures; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the limits moat uses, the system resolver and a plain dialer.
func DefaultConfig() Config {
	d := &net.Dialer{}
	return Config{
		Resolver:       net.DefaultResolver,
		Dial:           d.DialContext,
		HeaderTimeout:  10 * time.Second,
		DialTimeout:    15 * time.Second,
		IdleTimeout:    5 * time.Minute,
		MaxHeaderBytes: 8 << 10,
		MaxTunnels:     32,
	}
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	for i, h := range c.AllowedHosts {
		if _, err := parseTarget(h); err != nil {
			errs = append(errs, fmt.Errorf("allowed_hosts[%d]: %w", i, err))
		}
	}
	if c.Denied == nil {
		errs = append(errs, errors.New("denied: required"))
	}
	if c.Resolver == nil {
		errs = append(errs, errors.New("resolver: required"))
	}
	if c.Dial == nil {
		errs = append(errs, errors.New("dial: required"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"header_timeout", c.HeaderTimeout}, {"dial_timeout", c.DialTimeout}, {"idle_timeout", c.IdleTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive", d.name))
		}
	}
	if c.MaxHeaderBytes <= 0 {
		errs = append(errs, errors.New("max_header_bytes: must be positive"))
	}
	if c.MaxTunnels <= 0 {
		errs = append(errs, errors.New("max_tunnels: must be positive"))
	}
	return errors.Join(errs...)
}

// target is a parsed host:port: an IP literal or a lower-case DNS name.
type target struct {
	ip   netip.Addr // valid for an IP literal
	name string     // lower case; set for a DNS name
	port uint16
}

func (t target) String() string {
	if t.ip.IsValid() {
		return netip.AddrPortFrom(t.ip, t.port).String()
	}
	return net.JoinHostPort(t.name, strconv.Itoa(int(t.port)))
}

// parseTarget parses "host:port" with a decimal port from 1 to 65535 without leading
// zeros. A host that parses as an IP address (without a zone) is an IP literal; anything
// else is a name, lower-cased.
func parseTarget(s string) (target, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return target{}, fmt.Errorf("%q is not host:port", s)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || strconv.FormatUint(p, 10) != port {
		return target{}, fmt.Errorf("%q: port must be a number from 1 to 65535", s)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return target{}, fmt.Errorf("%q: no zones", s)
		}
		return target{ip: a, port: uint16(p)}, nil
	}
	if strings.ContainsAny(host, "[]%/ ") {
		return target{}, fmt.Errorf("%q: not a DNS name or an IP address", s)
	}
	return target{name: strings.ToLower(host), port: uint16(p)}, nil
}

// Proxy is the filtering CONNECT proxy of one app.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	allowed map[target]bool
	slots   chan struct{}
}

// New returns a Proxy for one app's AllowedHosts.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("network proxy config: %w", err)
	}
	p := &Proxy{
		cfg:     cfg,
		log:     cfg.Logger,
		allowed: make(map[target]bool, len(cfg.AllowedHosts)),
		slots:   make(chan struct{}, cfg.MaxTunnels),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for _, h := range cfg.AllowedHosts {
		t, _ := parseTarget(h) // checked by Validate
		p.allowed[t] = true
	}
	return p, nil
}

// Serve serves CONNECT requests on l until ctx is done; then it closes l, the connections
// it accepted and their tunnels, and returns nil once they are gone. It returns an error if
// accepting fails otherwise.
func (p *Proxy) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reg := &registry{tunnels: make(map[*tunnel]struct{})}
	defer reg.wg.Wait()
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serveHTTP(ctx, reg, w, r) }),
		ReadHeaderTimeout: p.cfg.HeaderTimeout,
		ReadTimeout:       p.cfg.HeaderTimeout,
		WriteTimeout:      p.cfg.HeaderTimeout + p.cfg.DialTimeout,
		IdleTimeout:       p.cfg.HeaderTimeout,
		MaxHeaderBytes:    p.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	stop := context.AfterFunc(ctx, func() {
		_ = srv.Close()
		reg.closeAll()
	})
	defer stop()
	err := srv.Serve(l)
	// However Serve ended: close what is open, so that the deferred Wait sees every tunnel
	// that started (start refuses new ones once closeAll has run).
	_ = srv.Close()
	reg.closeAll()
	if ctx.Err() != nil || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("network proxy: %w", err)
}

func (p *Proxy) serveHTTP(ctx context.Context, reg *registry, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		refuse(w, http.StatusMethodNotAllowed, "this proxy only tunnels: use CONNECT host:port")
		return
	}
	t, err := parseTarget(r.Host)
	if err != nil {
		refuse(w, http.StatusBadRequest, "CONNECT needs host:port: "+err.Error())
		return
	}
	// Enforces DESIGN rule 6; attacked by TestProxy_RefusesUndeclaredHosts.
	if !p.allowed[t] {
		capName := "host:" + printable(strings.ToLower(r.Host))
		p.log.WarnContext(ctx, "app network host denied", "capability", capName)
		p.cfg.Denied(capName)
		refuse(w, http.StatusForbidden, "the app's manifest does not declare "+capName)
		return
	}
	select {
	case p.slots <- struct{}{}:
	default:
		refuse(w, http.StatusServiceUnavailable, fmt.Sprintf("more than %d tunnels open", p.cfg.MaxTunnels))
		return
	}
	release := func() { <-p.slots }
	dctx, cancel := context.WithTimeout(r.Context(), p.cfg.DialTimeout)
	up, err := p.dial(dctx, t)
	cancel()
	if err != nil {
		release()
		p.log.WarnContext(ctx, "app network host unreachable", "host", t.String(), "error", err)
		status := http.StatusBadGateway
		if errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusGatewayTimeout
		}
		refuse(w, status, "cannot reach "+t.String())
		return
	}
	rc := http.NewResponseController(w)
	down, brw, err := rc.Hijack()
	if err != nil {
		release()
		_ = up.Close()
		refuse(w, http.StatusInternalServerError, "cannot hijack the connection")
		return
	}
	// The Hijack contract: the server no longer touches down, and deadlines set by the
	// server are ours to clear.
	_ = down.SetDeadline(time.Time{})
	tn := &tunnel{down: down, up: up}
	if !reg.start(tn, func() {
		defer release()
		p.run(tn, brw.Reader)
	}) {
		release()
		tn.close()
	}
}

// dial connects to t: directly for an IP literal, else to each resolved address in turn.
func (p *Proxy) dial(ctx context.Context, t target) (net.Conn, error) {
	if t.ip.IsValid() {
		return p.cfg.Dial(ctx, "tcp", netip.AddrPortFrom(t.ip, t.port).String())
	}
	addrs, err := p.cfg.Resolver.LookupNetIP(ctx, "ip", t.name)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", t.name, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", t.name)
	}
	var errs []error
	for _, a := range addrs {
		c, err := p.cfg.Dial(ctx, "tcp", netip.AddrPortFrom(a.Unmap(), t.port).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Connection", "close")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n") //nolint:gosec // G705: a text/plain answer to a proxy client, never HTML
}

// printable cuts s to 300 bytes and replaces bytes outside printable ASCII with '?'.
func printable(s string) string {
	if len(s) > 300 {
		s = s[:300]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// tunnel is one open CONNECT tunnel.
type tunnel struct {
	down, up net.Conn
	last     atomic.Int64 // unix nanoseconds of the last byte moved either way
	once     sync.Once
}

func (t *tunnel) close() {
	t.once.Do(func() {
		_ = t.down.Close()
		_ = t.up.Close()
	})
}

// registry holds the open tunnels of one Serve call, which net/http no longer tracks once
// hijacked.
type registry struct {
	mu      sync.Mutex
	tunnels map[*tunnel]struct{} // nil once closed
	wg      sync.WaitGroup
}

// start runs fn for t in a goroutine; false if Serve is shutting down.
func (r *registry) start(t *tunnel, fn func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tunnels == nil {
		return false
	}
	r.tunnels[t] = struct{}{}
	r.wg.Go(func() {
		defer func() {
			r.mu.Lock()
			delete(r.tunnels, t)
			r.mu.Unlock()
		}()
		fn()
	})
	return true
}

// closeAll closes every tunnel and refuses new ones.
func (r *registry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for t := range r.tunnels {
		t.close()
	}
	r.tunnels = nil
}

// run answers 200, then copies both ways until either side ends or the tunnel idles.
func (p *Proxy) run(t *tunnel, buffered *bufio.Reader) {
	defer t.close()
	t.last.Store(time.Now().UnixNano())
	_ = t.down.SetWriteDeadline(time.Now().Add(p.cfg.IdleTimeout))
	if _, err := io.WriteString(t.down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the client sent right after its request (a TLS ClientHello, often) are in the
	// server's buffer: they go first. The buffer's own reader must not be read past them
	// (net/http's reader is not for use after a hijack), so the rest comes from the conn.
	if n := buffered.Buffered(); n > 0 {
		early, _ := buffered.Peek(n)
		_ = t.up.SetWriteDeadline(time.Now().Add(p.cfg.IdleTimeout))
		if _, err := t.up.Write(early); err != nil {
			return
		}
	}
	ended := make(chan bool, 2)
	go func() { ended <- p.copy(t, t.up, t.down) }()
	go func() { ended <- p.copy(t, t.down, t.up) }()
	// A direction that ended with a clean EOF was half-closed onwards; the other runs on
	// (a client may shut down its sending side and still read the answer). Anything else
	// ends the tunnel.
	if !<-ended {
		t.close()
	}
	<-ended
}

// copy moves bytes from src to dst. A read times out when the tunnel has been idle for
// IdleTimeout, counting traffic both ways. It returns true if src ended with EOF and dst
// was half-closed.
func (p *Proxy) copy(t *tunnel, dst, src net.Conn) bool {
	buf := make([]byte, 32<<10)
	for {
		_ = src.SetReadDeadline(time.Unix(0, t.last.Load()).Add(p.cfg.IdleTimeout))
		n, err := src.Read(buf)
		if n > 0 {
			t.last.Store(time.Now().UnixNano())
			_ = dst.SetWriteDeadline(time.Now().Add(p.cfg.IdleTimeout))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return false
			}
		}
		if err == nil {
			continue
		}
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() &&
			time.Since(time.Unix(0, t.last.Load())) < p.cfg.IdleTimeout {
			continue
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				return cw.CloseWrite() == nil
			}
		}
		return false
	}
}
