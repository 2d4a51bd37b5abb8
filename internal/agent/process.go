package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/agent/sandbox"
	"github.com/moat-iot/moat/internal/errreport"
)

// appProcess is a running app: started by the agent itself (plain), or by the sandbox.
type appProcess struct {
	cmd     *exec.Cmd
	sbx     *sandbox.Process
	started time.Time
	stderr  *tailBuffer
	done    chan struct{}
	state   *os.ProcessState
	sbxExit *sandbox.Exit
	ended   time.Time
}

// sandboxed reports whether apps run in the sandbox: as an unprivileged user in their own
// network namespace, which takes a runtime running as root with --app-uid.
func (a *Agent) sandboxed() bool {
	return a.cfg.AppUID != 0 && a.cfg.AppGID != 0 && os.Geteuid() == 0 && sandbox.DefaultIsolation() == sandbox.IsolationNamespace
}

// startSandboxed starts the app in the sandbox (internal/agent/sandbox): its own network
// namespace whose only way out is the proxy, the app's user, no capabilities, NoNewPrivs.
// The directories down to the app's slot become traversable (mode 0710) by the app's
// group only: it reaches its own files and nothing else of the state directory.
func (a *Agent) startSandboxed(ctx context.Context, c boot.Choice, sock string, proxy sandbox.ProxyServer) (*appProcess, error) {
	cred := &sandbox.Credential{UID: uint32(a.cfg.AppUID), GID: uint32(a.cfg.AppGID)} //nolint:gosec // G115: Config.Validate bounds both to 0..2^31-1
	slotDir := filepath.Dir(c.Root)
	for _, dir := range []string{a.cfg.StateDir, filepath.Dir(slotDir), slotDir} {
		if err := os.Lchown(dir, os.Geteuid(), a.cfg.AppGID); err != nil {
			return nil, fmt.Errorf("app access to %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o710); err != nil { //nolint:gosec // G302: a directory the app's group only traverses (no read, no write)
			return nil, fmt.Errorf("app access to %s: %w", dir, err)
		}
	}
	rel, err := filepath.Rel(c.Root, c.Path)
	if err != nil {
		return nil, err
	}
	tail := &tailBuffer{max: errreport.MaxStderrTailBytes}
	sp, err := sandbox.Start(ctx, sandbox.Spec{
		Dir: c.Root, Entry: rel, Socket: sock, Proxy: proxy, Isolation: sandbox.IsolationNamespace,
		Credential: cred, Stderr: tail, StopGrace: 5 * time.Second, Logger: a.log,
	})
	if err != nil {
		return nil, err
	}
	p := &appProcess{sbx: sp, started: time.Now(), stderr: tail, done: make(chan struct{})}
	go func() {
		exit, _ := sp.Wait()
		p.ended = p.started.Add(exit.Uptime)
		p.sbxExit = &exit
		close(p.done)
	}()
	return p, nil
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
	if p.sbx != nil {
		_ = p.sbx.Signal(syscall.SIGTERM)
		go func() {
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				_ = p.sbx.Signal(syscall.SIGKILL)
			}
		}()
		return
	}
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
	if p.sbxExit != nil {
		if p.sbxExit.Signal != 0 {
			return signalName(p.sbxExit.Signal)
		}
		return ""
	}
	if p.state == nil {
		return ""
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return signalName(ws.Signal())
	}
	return ""
}

func (p *appProcess) exitCode() int {
	if p.sbxExit != nil {
		return p.sbxExit.Code & 0xff
	}
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
