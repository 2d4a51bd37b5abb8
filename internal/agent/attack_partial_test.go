package agent_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/agent/boot"
)

// TestAgent_PartialBundleActivatesNothing is ATTACKS row 20 (Uptane partial bundle): an OS
// and an app are assigned together, and the device's connection is cut as soon as the
// first of the two is downloaded. Nothing is installed or activated: the boot record still
// names the images the device ran, with nothing on trial. When the connection comes back,
// the device's own retry installs both, and it attests with both.
func TestAgent_PartialBundleActivatesNothing(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	px := newCutProxy(t, f.Server.DeviceURL)
	state := t.TempDir()

	var armed, cut atomic.Bool
	var installedAfterCut atomic.Int32
	failed := make(chan struct{}, 1)
	cfg := f.agentConfig(t, d, state)
	cfg.ServerURL = px.url
	cfg.Logger = slog.New(slog.NewTextHandler(watchLog{tlog: tlog{t}, failed: failed, cut: &cut}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Step = func(step string) {
		switch {
		case step == "downloaded" && armed.CompareAndSwap(true, false):
			px.down() // the first image of the two is on the device: cut
			cut.Store(true)
		case step == "installed" && cut.Load():
			installedAfterCut.Add(1)
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	// Both changes are made while the device cannot see either, so one check sees both.
	px.down()
	os2 := f.PublishOS("moat-os", "2.0.0", 1, "Retail")
	app2 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(app2.Path)
	armed.Store(true)
	px.up()

	select {
	case <-failed:
	case <-time.After(90 * time.Second):
		t.Fatal("the device never tried, and failed, to fetch the second image after the cut")
	}
	rec, err := boot.ReadRecord(state)
	if err != nil {
		t.Fatal(err)
	}
	if rec.OS.Pending != "" || rec.App.Pending != "" || rec.OS.Images[rec.OS.Active].Path != f.os.Path || rec.App.Images[rec.App.Active].Path != f.app.Path {
		t.Errorf("boot record after the cut: OS %+v, app %+v; want %s and %s active and nothing on trial", rec.OS, rec.App, f.os.Path, f.app.Path)
	}
	if n := installedAfterCut.Load(); n != 0 {
		t.Errorf("%d images installed after the connection was cut, want none", n)
	}

	px.up()
	eventually(t, "the retry installs both and the device attests with both", attested(f, t, d.ID, os2.Path, app2.Path))
}

// watchLog writes the agent's log to the test's and signals failed at the first failure
// logged after the cut: the check that lost the connection is over.
type watchLog struct {
	tlog
	failed chan struct{}
	cut    *atomic.Bool
}

func (w watchLog) Write(p []byte) (int, error) {
	s := string(p)
	if w.cut.Load() && (strings.Contains(s, `msg="update failed"`) || strings.Contains(s, `msg="assignment check failed"`)) {
		select {
		case w.failed <- struct{}{}:
		default:
		}
	}
	return w.tlog.Write(p)
}

// cutProxy forwards TCP connections to a server (TLS passes through untouched) and can
// cut every connection at once and refuse new ones, as a lost network would.
type cutProxy struct {
	url    string
	target string
	ln     net.Listener
	mu     sync.Mutex
	isUp   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, serverURL string) *cutProxy {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{url: "https://" + ln.Addr().String(), target: u.Host, ln: ln, isUp: true, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.down()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if !p.isUp {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.forward(c) })
	}
}

func (p *cutProxy) forward(c net.Conn) {
	defer p.drop(c)
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(s) {
		return
	}
	defer p.drop(s)
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(s, c); s.Close() })
	io.Copy(c, s)
	c.Close()
	wg.Wait()
}

// track adds c to the connections a cut closes; false (and c closed) if the proxy is down.
func (p *cutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.isUp {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *cutProxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// down cuts every connection and refuses new ones until up.
func (p *cutProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isUp = false
	for c := range p.conns {
		c.Close()
	}
}

func (p *cutProxy) up() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isUp = true
}
