package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// initEnv marks the init step: Start runs InitPath with only this variable set.
const initEnv = "MOAT_SANDBOX_INIT"

// initVersion is initEnv's value; a binary of another version refuses the config.
const initVersion = "1"

// initFD is the init step's end of the control socket (the first of ExtraFiles).
const initFD = 3

// nsProxyAddr is where the proxy listens inside the app's network namespace: the namespace
// is the app's alone, so a fixed port cannot clash.
const nsProxyAddr = "127.0.0.1:3128"

// initConfig is what Start tells the init step.
type initConfig struct {
	Path        string   // the entry point, absolute
	Args        []string // argv, from argv[0]
	Env         []string
	SetCred     bool
	UID, GID    int
	DropCaps    bool   // empty the capability bounding set
	Loopback    bool   // bring lo up (new network namespace)
	ProxyListen string // listen here and hand the socket to the runtime
	ParentPID   int
}

// Control messages from the init step: msgListener carries the proxy's listening socket;
// msgError+text ends the start. A successful exec closes the socket (close-on-exec), which
// the runtime reads as success.
const (
	msgListener = "listener"
	msgError    = "error:"
)

// MaybeInit runs the sandbox's init step and never returns, if this process was started as
// one by Start; otherwise it returns at once. Call it first thing in main (and in TestMain
// of tests that start apps): the init step must run before anything else in the binary.
func MaybeInit() {
	if os.Getenv(initEnv) == "" {
		return
	}
	// The bounding set and no_new_privs are per thread: set them on the thread that execs.
	runtime.LockOSThread()
	os.Exit(runInit())
}

// runInit prepares the process and executes the entry point; it returns only on failure,
// with the exit status, having told the runtime why.
func runInit() int {
	f := os.NewFile(initFD, "sandbox-control")
	c, err := net.FileConn(f) // a close-on-exec duplicate
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "moat sandbox init: control socket: %v\n", err)
		return 125
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		fmt.Fprintln(os.Stderr, "moat sandbox init: control socket is not a Unix socket")
		return 125
	}
	fail := func(step string, err error) int {
		_, _ = uc.Write([]byte(msgError + step + ": " + err.Error()))
		return 126
	}
	if os.Getenv(initEnv) != initVersion {
		return fail("init", fmt.Errorf("init version %q, want %q", os.Getenv(initEnv), initVersion))
	}
	buf := make([]byte, 1<<20)
	n, err := uc.Read(buf)
	if err != nil {
		return fail("read config", err)
	}
	var cfg initConfig
	if err := json.Unmarshal(buf[:n], &cfg); err != nil {
		return fail("read config", err)
	}
	if cfg.Loopback {
		if err := loopbackUp(); err != nil {
			return fail("bring up loopback", err)
		}
	}
	if cfg.ProxyListen != "" {
		if err := handOverListener(uc, cfg.ProxyListen); err != nil {
			return fail("proxy listener", err)
		}
	}
	if cfg.DropCaps {
		if err := dropBoundingSet(); err != nil {
			return fail("drop capability bounding set", err)
		}
	}
	if cfg.SetCred {
		if err := pinLoginUID(cfg.UID); err != nil {
			return fail("set audit login uid", err)
		}
		if err := syscall.Setgroups([]int{}); err != nil {
			return fail("setgroups", err)
		}
		if err := syscall.Setresgid(cfg.GID, cfg.GID, cfg.GID); err != nil {
			return fail("setresgid", err)
		}
		if err := syscall.Setresuid(cfg.UID, cfg.UID, cfg.UID); err != nil {
			return fail("setresuid", err)
		}
	}
	// A change of credentials clears the parent-death signal: set it again, then make
	// sure the runtime did not die before it was set.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		return fail("set parent-death signal", err)
	}
	if os.Getppid() != cfg.ParentPID {
		return 1
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail("set no_new_privs", err)
	}
	err = syscall.Exec(cfg.Path, cfg.Args, cfg.Env) //nolint:gosec // G204: the entry point Start checked, from the runtime, not the app
	return fail("exec "+cfg.Path, err) + 1
}

// unsetLoginUID is the audit login UID of a task that never had one: (uid_t)-1.
const unsetLoginUID = "4294967295"

// pinLoginUID sets the audit login UID of this thread, the one that executes the app, to
// the app's user while it is unset. The kernel lets any task set an unset login UID once,
// without a capability, and keeps one per thread: an app would otherwise set its own to
// 0 and have the audit log name root for what it does, thread by thread through
// /proc/self/task/<tid>/loginuid (ATTACKS row 28; attacked by
// TestSandbox_RefusesProcfsAliasesAndOtherDirs). Once set, changing it needs
// CAP_AUDIT_CONTROL, which the app does not hold; the app's threads inherit it.
func pinLoginUID(uid int) error {
	const name = "/proc/thread-self/loginuid"
	cur, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel without audit keeps no login UID
	}
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(cur)) != unsetLoginUID {
		return nil // set by a login session: the app cannot change it
	}
	return os.WriteFile(name, []byte(strconv.Itoa(uid)), 0)
}

// loopbackUp brings up lo in the new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(fd) }()
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// handOverListener listens on addr (inside the app's namespace) and sends the socket to
// the runtime, which serves the proxy on it.
func handOverListener(uc *net.UnixConn, addr string) error {
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	lf, err := l.(*net.TCPListener).File()
	if err != nil {
		return err
	}
	defer lf.Close()
	_, _, err = uc.WriteMsgUnix([]byte(msgListener), unix.UnixRights(int(lf.Fd())), nil)
	return err
}

// dropBoundingSet empties the capability bounding set of this thread (and so of the
// program it executes), up to the kernel's last capability.
func dropBoundingSet() error {
	for c := 0; c < 64; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			return nil // past the last capability this kernel knows
		}
		if err != nil {
			return fmt.Errorf("capability %d: %w", c, err)
		}
	}
	return nil
}
