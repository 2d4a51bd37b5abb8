package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/errreport"
)

// appProcess is a running app.
type appProcess struct {
	cmd     *exec.Cmd
	started time.Time
	stderr  *tailBuffer
	done    chan struct{}
	state   *os.ProcessState
	ended   time.Time
}

// startApp starts the app's entry point as its own process group, in its slot's root, with
// the socket of its local API, its network proxy and nothing else of the agent's
// environment.
func (a *Agent) startApp(c boot.Choice, sock, proxy string) (*appProcess, error) {
	// The app's lifetime is the supervisor's (stop: SIGTERM to its group, then SIGKILL), not
	// a context's.
	cmd := exec.CommandContext(context.Background(), c.Path) //nolint:gosec // G204: the entry point of the slot the boot package just verified
	cmd.Dir = c.Root
	cmd.Env = []string{"MOAT_SOCKET=" + sock, "PATH=/usr/bin:/bin", "HOME=" + c.Root,
		"HTTPS_PROXY=" + proxy, "HTTP_PROXY=" + proxy, "https_proxy=" + proxy, "http_proxy=" + proxy}
	tail := &tailBuffer{max: errreport.MaxStderrTailBytes}
	cmd.Stderr = tail
	cmd.Stdout = nil
	cmd.SysProcAttr = processAttr()
	if a.cfg.AppUID != 0 && os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(a.cfg.AppUID), Gid: uint32(a.cfg.AppGID)} //nolint:gosec // G115: Config.Validate bounds both to 0..2^31-1
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &appProcess{cmd: cmd, started: time.Now(), stderr: tail, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.ended = time.Now()
		p.state = cmd.ProcessState
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) && p.state == nil {
			p.state = nil
		}
		close(p.done)
	}()
	return p, nil
}

// stop asks the app's process group to end, and kills it after 5 s.
func (p *appProcess) stop() {
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	go func() {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(pgid, syscall.SIGKILL)
		}
	}()
}

func (p *appProcess) uptime() time.Duration { return p.ended.Sub(p.started) }

func (p *appProcess) signal() string {
	if p.state == nil {
		return ""
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return signalName(ws.Signal())
	}
	return ""
}

func (p *appProcess) exitCode() int {
	if p.state == nil {
		return 255
	}
	return p.state.ExitCode() & 0xff
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGBUS:
		return "SIGBUS"
	case syscall.SIGILL:
		return "SIGILL"
	case syscall.SIGFPE:
		return "SIGFPE"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGPIPE:
		return "SIGPIPE"
	}
	return "SIGNAL"
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = bytes.Clone(t.buf[len(t.buf)-t.max:])
	}
	return len(p), nil
}

// Bytes returns a copy of the tail.
func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.buf)
}
