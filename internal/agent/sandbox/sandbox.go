// Package sandbox starts a device's application as a separate, unprivileged process and
// watches it until it exits. The app reaches peripherals only through the runtime's local
// API socket (internal/agent/periph) and the network only through the runtime's filtering
// proxy (internal/agent/netproxy); this package decides what else it can reach.
//
// # Modes
//
// [IsolationNamespace] (the runtime runs as root on Linux; the default there): the app runs
// under its own unprivileged user and group, in a new network namespace that holds only a
// loopback interface, with an empty capability bounding set, no_new_privs set, its own
// process group, and SIGKILL as its parent-death signal. The proxy listens on 127.0.0.1:3128
// inside the app's namespace (the listening socket is made there and handed to the runtime,
// which serves it): $HTTPS_PROXY points at it, and there is no other route out.
//
// [IsolationProcess] (the runtime is not root, or the operator chose it): no namespaces.
// The app runs as the runtime's user (or, when the runtime is root, as the given
// credential, with the bounding set emptied), with no_new_privs, its own process group and
// a parent-death signal. The proxy listens on a loopback port of the host and $HTTPS_PROXY
// points at it, but nothing stops the app from opening sockets itself: in this mode the
// host allow-list binds only apps that use the proxy (the SDK always does).
//
// docs/app-sandbox.md states precisely what each mode enforces and what it does not.
//
// # How the app is started
//
// The runtime re-executes its own binary (or Spec.InitPath) as a small init step, which
// must call [MaybeInit] first thing in main: it builds the network namespace's loopback
// and proxy socket while still privileged, drops the bounding set, switches user and group,
// sets no_new_privs and the parent-death signal, and executes the entry point with a clean
// environment. An error before the entry point runs is reported back to [Start] over a
// close-on-exec socket, so Start fails instead of a process that dies at once.
//
// Enforces DESIGN rule 6 (with periph and netproxy) and ATTACKS rows 27 and 28; attacked by
// TestSandbox_RefusesUndeclaredGPIOAndHost, TestSandbox_NamespaceConfinesApp and
// TestStart_RejectsEntryOutsideDir.
//
// # Concurrency
//
// Start may be called concurrently; a Process's methods are safe for concurrent use.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Isolation is how strongly the app is confined.
type Isolation int

const (
	// IsolationNamespace confines the app to its own user and network namespace. It needs
	// a runtime running as root on Linux.
	IsolationNamespace Isolation = iota + 1
	// IsolationProcess runs the app as a separate process without namespaces.
	IsolationProcess
)

func (i Isolation) String() string {
	switch i {
	case IsolationNamespace:
		return "namespace"
	case IsolationProcess:
		return "process"
	}
	return fmt.Sprintf("Isolation(%d)", int(i))
}

// DefaultIsolation is IsolationNamespace where the runtime runs as root on Linux, else
// IsolationProcess.
func DefaultIsolation() Isolation {
	if namespacesAvailable() {
		return IsolationNamespace
	}
	return IsolationProcess
}

// Credential is the app's unprivileged user and group.
type Credential struct {
	UID, GID uint32
}

// ProxyServer serves the app's network proxy on a listener the sandbox makes;
// *netproxy.Proxy is one.
type ProxyServer interface {
	Serve(ctx context.Context, l net.Listener) error
}

// Spec says what to start and how.
type Spec struct {
	// Dir is the unpacked application root, an absolute path. It is the app's working
	// directory. The runtime owns it; the app must not be able to write it.
	Dir string
	// Entry is the entry point, a path relative to Dir that must stay inside it (symbolic
	// links included): a regular executable file without set-user-ID or set-group-ID bits.
	Entry string
	// Args are the arguments after the program name; optional.
	Args []string
	// Env are extra "NAME=value" variables, optional. The app's environment is only these
	// and the runtime's own: PATH, MOAT_SOCKET, and the proxy variables; a name the
	// runtime sets (MOAT_*, *_PROXY in either case) is refused.
	Env []string
	// Socket is the local API socket (periph.Listen), passed as $MOAT_SOCKET; optional.
	Socket string
	// Proxy, optional, serves the app's network proxy; without it the app has no proxy
	// (and, in IsolationNamespace, no network).
	Proxy ProxyServer
	// Isolation is the mode; required.
	Isolation Isolation
	// Credential is the app's user and group: required when the runtime runs as root
	// (never 0), refused otherwise (an unprivileged runtime cannot change users).
	Credential *Credential
	// Stdout and Stderr, optional, receive the app's output. The last 4 KiB of stderr
	// are kept for the crash report either way.
	Stdout, Stderr io.Writer
	// StopGrace is how long after SIGTERM, when ctx ends, the app has before SIGKILL;
	// 0 sends SIGKILL at once.
	StopGrace time.Duration
	// InitPath, optional, is the executable that runs the init step (its main must call
	// MaybeInit); the running executable if empty.
	InitPath string
	// Logger, optional, receives the app's start and exit; nil discards them.
	Logger *slog.Logger
}

// Reserved environment: set by the runtime only.
func reservedEnv(name string) bool {
	switch strings.ToUpper(name) {
	case "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY":
		return true
	}
	return strings.HasPrefix(name, "MOAT_")
}

// Validate reports every problem with s, joined.
func (s Spec) Validate() error {
	var errs []error
	if s.Dir == "" || !filepath.IsAbs(s.Dir) {
		errs = append(errs, fmt.Errorf("dir: %q is not an absolute path", s.Dir))
	}
	if !filepath.IsLocal(s.Entry) {
		errs = append(errs, fmt.Errorf("entry: %q is not a relative path inside dir", s.Entry))
	}
	for i, kv := range s.Env {
		name, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || name == "" || strings.ContainsAny(name, "\x00") || strings.ContainsRune(kv, 0):
			errs = append(errs, fmt.Errorf("env[%d]: not NAME=value", i))
		case reservedEnv(name):
			errs = append(errs, fmt.Errorf("env[%d]: %s is set by the runtime", i, name))
		}
	}
	if s.Socket != "" && !filepath.IsAbs(s.Socket) {
		errs = append(errs, fmt.Errorf("socket: %q is not an absolute path", s.Socket))
	}
	if s.StopGrace < 0 {
		errs = append(errs, errors.New("stop_grace: must not be negative"))
	}
	root := os.Geteuid() == 0
	switch s.Isolation {
	case IsolationNamespace:
		if !namespacesAvailable() {
			errs = append(errs, errors.New("isolation: namespace needs a runtime running as root on Linux"))
		}
	case IsolationProcess:
	default:
		errs = append(errs, fmt.Errorf("isolation: %v is not a mode", s.Isolation))
	}
	switch c := s.Credential; {
	case root && c == nil:
		errs = append(errs, errors.New("credential: required when the runtime runs as root (an app never runs as root)"))
	case root && (c.UID == 0 || c.GID == 0):
		errs = append(errs, errors.New("credential: uid and gid must not be 0"))
	case !root && c != nil:
		errs = append(errs, errors.New("credential: only a runtime running as root can run the app as another user"))
	}
	return errors.Join(errs...)
}

// checkEntry opens dir as a root and checks the entry point inside it; it returns the
// entry's path. The runtime owns dir, so the path stays what was checked until exec.
func checkEntry(dir, entry string) (string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", fmt.Errorf("app dir: %w", err)
	}
	defer func() { _ = root.Close() }()
	fi, err := root.Stat(entry) // follows symbolic links, refusing any that leave dir
	if err != nil {
		return "", fmt.Errorf("entry point %s: %w", entry, err)
	}
	switch {
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("entry point %s: not a regular file", entry)
	case fi.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("entry point %s: not executable", entry)
	case fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0:
		return "", fmt.Errorf("entry point %s: set-user-ID or set-group-ID", entry)
	}
	return filepath.Join(dir, entry), nil
}

// Exit is how an app ended: what goes into a crash report.
type Exit struct {
	// Code is the exit status, or -1 if a signal ended the app.
	Code int
	// Signal is the signal that ended the app, or 0.
	Signal syscall.Signal
	// Uptime runs from Start to the exit.
	Uptime time.Duration
	// Stderr is the last 4 KiB the app wrote to stderr.
	Stderr []byte
}

func (e Exit) String() string {
	if e.Signal != 0 {
		return fmt.Sprintf("killed by signal %d (%v) after %v", int(e.Signal), e.Signal, e.Uptime.Round(time.Millisecond))
	}
	return fmt.Sprintf("exit status %d after %v", e.Code, e.Uptime.Round(time.Millisecond))
}

// Process is a started app.
type Process struct {
	pid  int
	done chan struct{}
	exit Exit
	err  error
}

// Pid is the app's process ID (also its process group ID).
func (p *Process) Pid() int { return p.pid }

// Done is closed when the app has exited and everything of it is gone: its process group
// killed, its output copied, its proxy stopped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for Done and returns how the app ended. The error is for a failure to wait,
// not for an exit status or a signal. It may be called any number of times.
func (p *Process) Wait() (Exit, error) {
	<-p.done
	return p.exit, p.err
}

// Signal sends sig to the app's process group.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return signalGroup(p.pid, sig)
}

// Start starts the app; ctx's end stops it (SIGTERM to its process group, then SIGKILL
// after Spec.StopGrace). Start returns once the entry point is executing, or an error if
// it could not be started.
func Start(ctx context.Context, spec Spec) (*Process, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("sandbox spec: %w", err)
	}
	entry, err := checkEntry(spec.Dir, spec.Entry)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if spec.Logger == nil {
		spec.Logger = slog.New(slog.DiscardHandler)
	}
	if spec.Credential == nil {
		spec.Logger.WarnContext(ctx, "app runs as the runtime's own user: it can read the runtime's files and open sockets around the proxy (process isolation without root; docs/app-sandbox.md)", "entry", spec.Entry)
	}
	return start(ctx, spec, entry)
}

// baseEnv is the app's environment before the proxy variables and Spec.Env.
func baseEnv(spec Spec) []string {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	if spec.Socket != "" {
		env = append(env, "MOAT_SOCKET="+spec.Socket)
	}
	return env
}

func proxyEnv(addr string) []string {
	u := "http://" + addr
	return []string{"HTTPS_PROXY=" + u, "https_proxy=" + u, "HTTP_PROXY=" + u, "http_proxy=" + u}
}

// ring keeps the last bytes written to it.
type ring struct {
	mu   sync.Mutex
	buf  []byte
	size int
}

func newRing(size int) *ring { return &ring{size: size} }

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(p)
	if len(p) >= r.size {
		r.buf = append(r.buf[:0], p[len(p)-r.size:]...)
		return n, nil
	}
	if over := len(r.buf) + len(p) - r.size; over > 0 {
		r.buf = append(r.buf[:0], r.buf[over:]...)
	}
	r.buf = append(r.buf, p...)
	return n, nil
}

func (r *ring) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf...)
}

// MakeRunDir creates (or fixes) dir for the app's sockets: mode 0710, owned by the
// runtime's user and the app's group, so that the app reaches the sockets in it but cannot
// list, add, remove or replace them; mode 0700 without a credential (app and runtime are
// one user). A symbolic link or a non-directory at dir is an error.
func MakeRunDir(dir string, cred *Credential) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("app run dir: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("app run dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("app run dir %s: not a directory", dir)
	}
	mode := os.FileMode(0o700)
	if cred != nil {
		mode = 0o710
		if err := os.Lchown(dir, os.Geteuid(), int(cred.GID)); err != nil {
			return fmt.Errorf("app run dir: %w", err)
		}
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("app run dir: %w", err)
	}
	return nil
}
