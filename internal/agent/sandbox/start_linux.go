package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// startTimeout bounds the init step, from fork to exec of the entry point.
const startTimeout = 10 * time.Second

// stderrTail is how much of the app's stderr an Exit keeps.
const stderrTail = 4 << 10

func namespacesAvailable() bool { return os.Geteuid() == 0 }

func signalGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}

func start(ctx context.Context, spec Spec, entry string) (*Process, error) {
	initPath := spec.InitPath
	if initPath == "" {
		var err error
		if initPath, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("sandbox: init executable: %w", err)
		}
	}
	ns := spec.Isolation == IsolationNamespace
	root := os.Geteuid() == 0

	// The proxy: inside the namespace the init step makes the listener; otherwise the
	// runtime listens on the host's loopback.
	env := baseEnv(spec)
	var hostListener net.Listener
	if spec.Proxy != nil {
		addr := nsProxyAddr
		if !ns {
			var lc net.ListenConfig
			l, err := lc.Listen(ctx, "tcp4", "127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("sandbox: proxy listener: %w", err)
			}
			hostListener, addr = l, l.Addr().String()
		}
		env = append(env, proxyEnv(addr)...)
	}
	env = append(env, spec.Env...)
	cfg := initConfig{
		Path:      entry,
		Args:      append([]string{entry}, spec.Args...),
		Env:       env,
		DropCaps:  root,
		Loopback:  ns,
		ParentPID: os.Getpid(),
	}
	if ns && spec.Proxy != nil {
		cfg.ProxyListen = nsProxyAddr
	}
	if c := spec.Credential; c != nil {
		cfg.SetCred, cfg.UID, cfg.GID = true, int(c.UID), int(c.GID)
	}

	p, err := launch(ctx, spec, initPath, cfg, hostListener)
	if err != nil {
		if hostListener != nil {
			hostListener.Close()
		}
		return nil, fmt.Errorf("sandbox: start %s: %w", spec.Entry, err)
	}
	return p, nil
}

// launch runs the init step, sends it cfg, and waits until it has executed the entry
// point (or failed).
func launch(ctx context.Context, spec Spec, initPath string, cfg initConfig, hostListener net.Listener) (*Process, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "sandbox-control"), os.NewFile(uintptr(fds[1]), "sandbox-control")
	defer theirs.Close()
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ctl := c.(*net.UnixConn)
	defer func() { _ = ctl.Close() }()

	tail := newRing(stderrTail)
	var stderr io.Writer = tail
	if spec.Stderr != nil {
		stderr = io.MultiWriter(tail, spec.Stderr)
	}
	// Linux sends the parent-death signal when the thread that forked exits, not the
	// process: the runtime must not end a goroutine locked to its thread (LockOSThread
	// without Unlock), which would end that thread and kill the app.
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if cfg.Loopback {
		attr.Cloneflags = syscall.CLONE_NEWNET
	}
	cmd := &exec.Cmd{
		Path:        initPath,
		Args:        []string{"moat-sandbox-init"},
		Env:         []string{initEnv + "=" + initVersion},
		Dir:         spec.Dir,
		Stdout:      spec.Stdout,
		Stderr:      stderr,
		ExtraFiles:  []*os.File{theirs},
		SysProcAttr: attr,
		// Output copying may outlive the app only briefly: the process group is killed
		// when the app exits, which closes the pipes.
		WaitDelay: 2 * time.Second,
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	started := time.Now()
	theirs.Close()
	pid := cmd.Process.Pid

	abort := func(err error) (*Process, error) {
		_ = signalGroup(pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t := strings.TrimSpace(string(tail.Bytes())); t != "" {
			err = fmt.Errorf("%w (stderr: %s)", err, t)
		}
		return nil, err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return abort(err)
	}
	_ = ctl.SetDeadline(started.Add(startTimeout))
	if _, err := ctl.Write(b); err != nil {
		return abort(fmt.Errorf("send config: %w", err))
	}
	nsListener, err := readControl(ctl)
	if err != nil {
		return abort(err)
	}

	p := &Process{pid: pid, done: make(chan struct{})}
	l := hostListener
	if nsListener != nil {
		l = nsListener
	}
	proxyCtx, stopProxy := context.WithCancel(context.Background())
	var proxyDone sync.WaitGroup
	if l != nil {
		proxyDone.Go(func() {
			if err := spec.Proxy.Serve(proxyCtx, l); err != nil {
				spec.Logger.Warn("app network proxy stopped", "error", err)
			}
		})
	}
	spec.Logger.InfoContext(ctx, "app started", "pid", pid, "entry", spec.Entry, "isolation", spec.Isolation.String())
	go func() {
		p.exit, p.err = watch(ctx, spec, cmd, started, tail)
		stopProxy()
		proxyDone.Wait()
		spec.Logger.Info("app exited", "pid", pid, "exit", p.exit.String())
		close(p.done)
	}()
	return p, nil
}

// readControl reads the init step's messages until the socket closes at exec. It returns
// the proxy listener the init step handed over, if any.
func readControl(ctl *net.UnixConn) (net.Listener, error) {
	var l net.Listener
	fail := func(err error) (net.Listener, error) {
		if l != nil {
			l.Close()
		}
		return nil, err
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := ctl.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return l, nil
			}
			return fail(fmt.Errorf("init step: %w", err))
		}
		msg := string(buf[:n])
		switch {
		case n == 0 && oobn == 0:
			return l, nil // closed at exec: the entry point runs
		case strings.HasPrefix(msg, msgError):
			return fail(errors.New(strings.TrimPrefix(msg, msgError)))
		case msg == msgListener && l == nil:
			nl, err := listenerFrom(oob[:oobn])
			if err != nil {
				return fail(err)
			}
			l = nl
		default:
			return fail(fmt.Errorf("init step: unexpected message %q", msg))
		}
	}
}

func listenerFrom(oob []byte) (net.Listener, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("proxy listener: bad control message")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return nil, fmt.Errorf("proxy listener: bad control message")
	}
	unix.CloseOnExec(fds[0])
	f := os.NewFile(uintptr(fds[0]), "proxy-listener")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("proxy listener: %w", err)
	}
	return l, nil
}

// watch waits for the app to exit (stopping it when ctx ends), kills what is left of its
// process group, reaps it and says how it ended.
func watch(ctx context.Context, spec Spec, cmd *exec.Cmd, started time.Time, tail *ring) (Exit, error) {
	pid := cmd.Process.Pid
	exited := make(chan time.Time, 1)
	go func() {
		waitNoReap(pid)
		exited <- time.Now()
	}()
	var at time.Time
	select {
	case at = <-exited:
	case <-ctx.Done():
		if spec.StopGrace > 0 {
			_ = signalGroup(pid, syscall.SIGTERM)
			select {
			case at = <-exited:
			case <-time.After(spec.StopGrace):
			}
		}
		if at.IsZero() {
			_ = signalGroup(pid, syscall.SIGKILL)
			at = <-exited
		}
	}
	// The app is a zombie: its process group ID cannot have been reused. Kill whatever it
	// left behind in the group (daemons, children), so nothing of it outlives it.
	_ = signalGroup(pid, syscall.SIGKILL)
	err := cmd.Wait()
	exit := Exit{Code: -1, Uptime: at.Sub(started), Stderr: tail.Bytes()}
	st := cmd.ProcessState
	if st == nil {
		return exit, fmt.Errorf("wait for app %d: %w", pid, err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		exit.Signal = ws.Signal()
	} else {
		exit.Code = st.ExitCode()
	}
	return exit, nil
}

// waitNoReap blocks until pid has exited, leaving it to be reaped by cmd.Wait.
func waitNoReap(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}
