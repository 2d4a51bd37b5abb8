package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/agent/netproxy"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/agent/sandbox"
	"github.com/moat-iot/moat/internal/image"
)

func TestMain(m *testing.M) {
	sandbox.MaybeInit()
	if mode := os.Getenv(appModeEnv); mode != "" {
		os.Exit(runApp(mode))
	}
	code := m.Run()
	if appBase != "" {
		os.RemoveAll(appBase)
	}
	os.Exit(code)
}

// appCred is the unprivileged user apps run as when the tests run as root (nobody).
var appCred = &sandbox.Credential{UID: 65534, GID: 65534}

var (
	appOnce sync.Once
	appBase string // a 0755 directory holding app/ (the app root) and run dirs
	appErr  error
)

// appRoot returns the app root: a copy of the test binary at bin/app, in directories that
// an unprivileged user can traverse (t.TempDir's are 0700).
func appRoot(t *testing.T) (base, dir string) {
	t.Helper()
	appOnce.Do(func() {
		appBase, appErr = os.MkdirTemp("", "sandbox")
		if appErr != nil {
			return
		}
		if appErr = os.Chmod(appBase, 0o755); appErr != nil {
			return
		}
		appErr = copyFile(filepath.Join(appBase, "app", "bin", "app"))
	})
	if appErr != nil {
		t.Fatalf("app root: %v", appErr)
	}
	return appBase, filepath.Join(appBase, "app")
}

func copyFile(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// cred is the credential a spec needs here: nobody when root, none otherwise.
func cred() *sandbox.Credential {
	if os.Geteuid() == 0 {
		return appCred
	}
	return nil
}

func ownerIDs(c *sandbox.Credential) (int, int) {
	if c == nil {
		return -1, -1
	}
	return int(c.UID), int(c.GID)
}

// runtimeFixture is the runtime side of one app: its local API, its proxy, and what they
// report.
type runtimeFixture struct {
	sock    string
	proxy   *netproxy.Proxy
	allowed string // host:port of an echo server the manifest declares
	denied  string // host:port of one it does not
	secret  string // a file only the runtime may read
	sim     *periph.DW100

	mu      sync.Mutex
	denials []string
}

func (f *runtimeFixture) Denied(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.denials = append(f.denials, c)
}

func (f *runtimeFixture) Denials() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.denials...)
}

func startRuntime(t *testing.T, c *sandbox.Credential) *runtimeFixture {
	t.Helper()
	base, _ := appRoot(t)
	run, err := os.MkdirTemp(base, "run")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	if err := sandbox.MakeRunDir(run, c); err != nil {
		t.Fatalf("MakeRunDir() = %v", err)
	}
	f := &runtimeFixture{sock: filepath.Join(run, "app.sock"), sim: periph.NewDW100()}
	f.allowed, f.denied = startEcho(t), startEcho(t)

	secretDir := filepath.Join(run, "keys")
	if err := os.Mkdir(secretDir, 0o700); err != nil {
		t.Fatal(err)
	}
	f.secret = filepath.Join(secretDir, "identity.key")
	if err := os.WriteFile(f.secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}

	caps := image.Capabilities{AllowedHosts: []string{f.allowed}, GPIO: []int{4}}
	srv, err := periph.New(periph.Config{
		Capabilities: caps,
		Backend:      f.sim,
		Denied:       f.Denied,
		Telemetry:    func(context.Context, string, json.RawMessage) error { return nil },
		Now:          time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := ownerIDs(c)
	l, err := periph.Listen(f.sock, uid, gid)
	if err != nil {
		t.Fatalf("periph.Listen() = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })

	pcfg := netproxy.DefaultConfig()
	pcfg.AllowedHosts = caps.AllowedHosts
	pcfg.Denied = f.Denied
	if f.proxy, err = netproxy.New(pcfg); err != nil {
		t.Fatal(err)
	}
	return f
}

// startEcho serves a line echo on the host's loopback until the test ends.
func startEcho(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(c, c)
			})
		}
	})
	return l.Addr().String()
}

// spec returns a spec for the helper app in mode.
func spec(t *testing.T, mode string, iso sandbox.Isolation, c *sandbox.Credential, f *runtimeFixture) (sandbox.Spec, *bytes.Buffer) {
	t.Helper()
	_, dir := appRoot(t)
	var stdout bytes.Buffer
	s := sandbox.Spec{
		Dir:   dir,
		Entry: "bin/app",
		// A race-enabled binary sleeps 1 s before a successful exit unless told not to.
		Env:        []string{appModeEnv + "=" + mode, "GORACE=atexit_sleep_ms=0"},
		Isolation:  iso,
		Credential: c,
		Stdout:     &stdout,
		StopGrace:  5 * time.Second,
	}
	if f != nil {
		s.Socket = f.sock
		s.Proxy = f.proxy
		s.Env = append(s.Env, "SANDBOX_TEST_ALLOWED="+f.allowed, "SANDBOX_TEST_DENIED="+f.denied, "SANDBOX_TEST_SECRET="+f.secret)
	}
	return s, &stdout
}

// run starts s and waits for it, failing the test on a start error or a timeout.
func run(t *testing.T, ctx context.Context, s sandbox.Spec) sandbox.Exit {
	t.Helper()
	p, err := sandbox.Start(ctx, s)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		_ = p.Signal(syscall.SIGKILL)
		t.Fatal("app did not exit")
	}
	exit, err := p.Wait()
	if err != nil {
		t.Fatalf("Wait() = %v", err)
	}
	return exit
}

func runProbe(t *testing.T, iso sandbox.Isolation, c *sandbox.Credential) (probe, *runtimeFixture) {
	t.Helper()
	f := startRuntime(t, c)
	s, stdout := spec(t, "probe", iso, c, f)
	exit := run(t, t.Context(), s)
	if exit.Code != 0 {
		t.Fatalf("probe app: %v; stderr: %s", exit, exit.Stderr)
	}
	var p probe
	if err := json.Unmarshal(stdout.Bytes(), &p); err != nil {
		t.Fatalf("probe output %q: %v", stdout.Bytes(), err)
	}
	return p, f
}

// TestSandbox_RefusesUndeclaredGPIOAndHost attacks DESIGN rule 6 (ATTACKS row 27) from a
// real app process in the mode every runtime has: an undeclared GPIO pin and an undeclared
// host are refused and reported, declared ones work.
func TestSandbox_RefusesUndeclaredGPIOAndHost(t *testing.T) {
	t.Parallel()
	c := cred()
	p, f := runProbe(t, sandbox.IsolationProcess, c)
	want := map[string]string{
		"gpio 4 (declared)":   "ok",
		"gpio 5 (undeclared)": "capability_denied",
		"declared host":       "ok",
		"undeclared host":     "host_denied",
	}
	got := map[string]string{
		"gpio 4 (declared)":   p.GPIODeclared,
		"gpio 5 (undeclared)": p.GPIOUndeclared,
		"declared host":       p.HostAllowed,
		"undeclared host":     p.HostDenied,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("app results (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"gpio:5", "host:" + f.denied}, f.Denials()); diff != "" {
		t.Errorf("reported denials (-want +got):\n%s", diff)
	}
	if !f.sim.HeaterOn() || f.sim.Pin(5) {
		t.Errorf("heater %v, pin 5 %v: want the declared pin set, the other untouched", f.sim.HeaterOn(), f.sim.Pin(5))
	}
	if p.Status["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", p.Status["NoNewPrivs"])
	}
	if c != nil {
		if p.UID != int(c.UID) || p.GID != int(c.GID) {
			t.Errorf("app uid/gid = %d/%d, want %d/%d", p.UID, p.GID, c.UID, c.GID)
		}
		if p.Status["CapBnd"] != "0000000000000000" || p.Status["CapEff"] != "0000000000000000" {
			t.Errorf("CapBnd %s, CapEff %s, want all zero", p.Status["CapBnd"], p.Status["CapEff"])
		}
		if p.SecretOpen != "permission_denied" {
			t.Errorf("opening the runtime's key file = %s, want permission_denied", p.SecretOpen)
		}
	}
	// Process isolation does not stop a direct connection: docs/app-sandbox.md says so.
	if p.DirectDial != "ok" {
		t.Logf("direct dial in process isolation: %s", p.DirectDial)
	}
}

// TestSandbox_NamespaceConfinesApp attacks rows 27 and 28 of ATTACKS in the root-only
// mode: the app cannot get around the proxy, holds no capability on any thread (read
// through /proc/self/task/<tid> too), runs as nobody with no_new_privs, and cannot read
// the runtime's keys.
func TestSandbox_NamespaceConfinesApp(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI runs as root: the namespace mode must be tested there")
		}
		t.Skip("network namespaces need root (CI runs as root)")
	}
	p, f := runProbe(t, sandbox.IsolationNamespace, appCred)
	if p.GPIOUndeclared != "capability_denied" || p.HostDenied != "host_denied" {
		t.Errorf("undeclared gpio %s, undeclared host %s, want both refused", p.GPIOUndeclared, p.HostDenied)
	}
	if p.GPIODeclared != "ok" || p.HostAllowed != "ok" {
		t.Errorf("declared gpio %s, declared host %s, want both ok (the proxy inside the namespace)", p.GPIODeclared, p.HostAllowed)
	}
	if p.DirectDial == "ok" {
		t.Error("the app reached a host directly, around the proxy")
	}
	if diff := cmp.Diff([]string{"lo"}, p.Interfaces); diff != "" {
		t.Errorf("app network interfaces (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"gpio:5", "host:" + f.denied}, f.Denials()); diff != "" {
		t.Errorf("reported denials (-want +got):\n%s", diff)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	if p.NetNS == "" || p.NetNS == self {
		t.Errorf("app network namespace %q, runtime's %q: want a new one", p.NetNS, self)
	}
	if p.UID != 65534 || p.GID != 65534 {
		t.Errorf("app uid/gid = %d/%d, want 65534", p.UID, p.GID)
	}
	zero := "0000000000000000"
	for i, st := range append([]map[string]string{p.Status}, p.TaskStatus...) {
		for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			if st[k] != zero {
				t.Errorf("status %d: %s = %q, want %s", i, k, st[k], zero)
			}
		}
		if st["NoNewPrivs"] != "1" || st["Groups"] != "" {
			t.Errorf("status %d: NoNewPrivs %q, Groups %q, want 1 and none", i, st["NoNewPrivs"], st["Groups"])
		}
	}
	if len(p.TaskStatus) == 0 {
		t.Error("no /proc/self/task entries read")
	}
	if p.SecretOpen != "permission_denied" {
		t.Errorf("opening the runtime's key file = %s, want permission_denied", p.SecretOpen)
	}
}

func TestStart_CleanEnvironment(t *testing.T) {
	t.Setenv("RUNTIME_ONLY_TOKEN", "do-not-leak")
	f := startRuntime(t, cred())
	s, stdout := spec(t, "env", sandbox.IsolationProcess, cred(), f)
	s.Env = append(s.Env, "DW100_MODEL=eco")
	if exit := run(t, t.Context(), s); exit.Code != 0 {
		t.Fatalf("env app: %v; %s", exit, exit.Stderr)
	}
	var env []string
	if err := json.Unmarshal(stdout.Bytes(), &env); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		names = append(names, name)
	}
	want := []string{"PATH", "MOAT_SOCKET", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
		appModeEnv, "GORACE", "SANDBOX_TEST_ALLOWED", "SANDBOX_TEST_DENIED", "SANDBOX_TEST_SECRET", "DW100_MODEL"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("app environment names (-want +got):\n%s", diff)
	}
}

func TestWait_ReportsExitCodeAndStderrTail(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	s, _ := spec(t, "exit3", sandbox.IsolationProcess, cred(), nil)
	s.Stderr = &stderr
	exit := run(t, t.Context(), s)
	if exit.Code != 3 || exit.Signal != 0 {
		t.Errorf("exit = %v, want status 3", exit)
	}
	if len(exit.Stderr) != 4096 || !bytes.HasSuffix(exit.Stderr, []byte("heater relay stuck: last words")) {
		t.Errorf("stderr tail = %d bytes ending %q, want 4096 ending with the last words", len(exit.Stderr), exit.Stderr[max(0, len(exit.Stderr)-40):])
	}
	if stderr.Len() <= 4096 {
		t.Errorf("Spec.Stderr got %d bytes, want all of it", stderr.Len())
	}
	if exit.Uptime <= 0 || exit.Uptime > 20*time.Second {
		t.Errorf("uptime = %v", exit.Uptime)
	}
}

func TestWait_ReportsSignal(t *testing.T) {
	t.Parallel()
	s, _ := spec(t, "selfkill", sandbox.IsolationProcess, cred(), nil)
	exit := run(t, t.Context(), s)
	if exit.Signal != syscall.SIGKILL || exit.Code != -1 {
		t.Errorf("exit = %+v, want killed by SIGKILL", exit)
	}
}

func TestStart_ContextStopsApp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		mode  string
		grace time.Duration
		want  syscall.Signal
	}{
		{"sleep", 5 * time.Second, syscall.SIGTERM},
		{"stubborn", 100 * time.Millisecond, syscall.SIGKILL},
		{"sleep", 0, syscall.SIGKILL},
	} {
		t.Run(fmt.Sprintf("%s/%v", tt.mode, tt.grace), func(t *testing.T) {
			t.Parallel()
			s, stdout := spec(t, tt.mode, sandbox.IsolationProcess, cred(), nil)
			s.StopGrace = tt.grace
			r, w := io.Pipe()
			s.Stdout = io.MultiWriter(stdout, w)
			ctx, cancel := context.WithCancel(t.Context())
			p, err := sandbox.Start(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 6)
			if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "ready\n" {
				t.Fatalf("app said %q, %v", buf, err)
			}
			go func() { _, _ = io.Copy(io.Discard, r) }()
			cancel()
			exit, err := p.Wait()
			w.Close()
			if err != nil || exit.Signal != tt.want {
				t.Errorf("Wait() = %v, %v, want killed by %v", exit, err, tt.want)
			}
		})
	}
}

func TestWait_KillsWhatTheAppLeftBehind(t *testing.T) {
	t.Parallel()
	s, stdout := spec(t, "fork", sandbox.IsolationProcess, cred(), nil)
	exit := run(t, t.Context(), s)
	if exit.Code != 0 {
		t.Fatalf("fork app: %v; %s", exit, exit.Stderr)
	}
	child, err := strconv.Atoi(strings.TrimSpace(stdout.String()))
	if err != nil {
		t.Fatalf("fork app printed %q", stdout.String())
	}
	// The child was killed with the group; it may linger briefly as a zombie of init.
	deadline := time.Now().Add(5 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil || zombie(stat) {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("the app's child %d still runs after the app exited: %s", child, stat)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func zombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// TestStart_RejectsEntryOutsideDir: the entry point must be an executable inside the app
// root, however it is spelled; nothing is started otherwise.
func TestStart_RejectsEntryOutsideDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	outside := t.TempDir()
	mustWrite := func(path string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(filepath.Join(outside, "evil"), 0o755)
	mustWrite(filepath.Join(dir, "bin", "data"), 0o644)
	mustWrite(filepath.Join(dir, "bin", "suid"), 0o755|os.ModeSetuid)
	for name, target := range map[string]string{
		"abs-link": filepath.Join(outside, "evil"),
		"rel-link": "../../" + filepath.Base(outside) + "/evil",
		"sh-link":  "/bin/sh",
	} {
		if err := os.Symlink(target, filepath.Join(dir, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, entry := range []string{
		"../" + filepath.Base(outside) + "/evil", "/bin/sh", "bin/abs-link", "bin/rel-link", "bin/sh-link",
		"bin/data", "bin/suid", "bin", "bin/missing", "",
	} {
		s := sandbox.Spec{Dir: dir, Entry: entry, Isolation: sandbox.IsolationProcess, Credential: cred()}
		if p, err := sandbox.Start(t.Context(), s); err == nil {
			_ = p.Signal(syscall.SIGKILL)
			t.Errorf("Start(entry %q) = nil error, want a refusal", entry)
		}
	}
}

func TestStart_RejectsBadSpec(t *testing.T) {
	t.Parallel()
	_, dir := appRoot(t)
	root := os.Geteuid() == 0
	good := sandbox.Spec{Dir: dir, Entry: "bin/app", Isolation: sandbox.IsolationProcess, Credential: cred()}
	bad := map[string]func(*sandbox.Spec){
		"relative dir":     func(s *sandbox.Spec) { s.Dir = "app" },
		"no isolation":     func(s *sandbox.Spec) { s.Isolation = 0 },
		"reserved env":     func(s *sandbox.Spec) { s.Env = []string{"MOAT_SOCKET=/tmp/x"} },
		"proxy env":        func(s *sandbox.Spec) { s.Env = []string{"https_proxy=http://evil:1"} },
		"env without =":    func(s *sandbox.Spec) { s.Env = []string{"JUSTANAME"} },
		"negative grace":   func(s *sandbox.Spec) { s.StopGrace = -time.Second },
		"relative socket":  func(s *sandbox.Spec) { s.Socket = "app.sock" },
		"root credential":  func(s *sandbox.Spec) { s.Credential = &sandbox.Credential{UID: 0, GID: 0} },
		"wrong credential": func(s *sandbox.Spec) { s.Credential = nil },
	}
	if !root {
		bad["wrong credential"] = func(s *sandbox.Spec) { s.Credential = appCred }
		bad["root credential"] = func(s *sandbox.Spec) { s.Credential = &sandbox.Credential{} }
		bad["namespace"] = func(s *sandbox.Spec) { s.Isolation = sandbox.IsolationNamespace }
	}
	for name, mod := range bad {
		s := good
		mod(&s)
		if p, err := sandbox.Start(t.Context(), s); err == nil {
			_ = p.Signal(syscall.SIGKILL)
			t.Errorf("Start(%s) = nil error", name)
		}
	}
}

// TestStart_ReportsExecFailure: a failure in the init step (here: exec of a file that is
// no program) is Start's error, not a process that dies at once.
func TestStart_ReportsExecFailure(t *testing.T) {
	t.Parallel()
	base, _ := appRoot(t)
	dir, err := os.MkdirTemp(base, "noexec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app"), []byte{0x7f, 'E', 'L', 'F', 0, 0}, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = sandbox.Start(t.Context(), sandbox.Spec{Dir: dir, Entry: "app", Isolation: sandbox.IsolationProcess, Credential: cred()})
	if err == nil || !strings.Contains(err.Error(), "exec") || !errors.Is(err, err) {
		t.Errorf("Start(bad executable) = %v, want an exec error", err)
	}
}

func TestMakeRunDir(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "run")
	if err := sandbox.MakeRunDir(dir, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode = %v, want 0700", fi.Mode().Perm())
	}
	if os.Geteuid() == 0 {
		if err := sandbox.MakeRunDir(dir, appCred); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(dir)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o710 || st.Gid != appCred.GID || st.Uid != 0 {
			t.Errorf("run dir = %v %d:%d, want 0710 0:%d", fi.Mode().Perm(), st.Uid, st.Gid, appCred.GID)
		}
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.MakeRunDir(link, nil); err == nil {
		t.Error("MakeRunDir(symlink) = nil error")
	}
}
