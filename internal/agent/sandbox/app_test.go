package sandbox_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/moat-iot/moat/sdk"
)

// The test binary is also the helper app: run by the sandbox with SANDBOX_TEST_APP set, it
// does what the mode says instead of running tests.
const appModeEnv = "SANDBOX_TEST_APP"

// probe is what the "probe" app reports on stdout, as JSON.
type probe struct {
	UID, GID       int
	Status         map[string]string // selected /proc/self/status fields
	TaskStatus     []map[string]string
	NetNS          string
	Interfaces     []string
	GPIODeclared   string // "ok" or the error
	GPIOUndeclared string
	HostAllowed    string
	HostDenied     string
	DirectDial     string
	SecretOpen     string
	Env            []string
}

// runApp runs the helper app in mode and returns its exit status.
func runApp(mode string) int {
	switch mode {
	case "probe":
		return probeApp()
	case "procfs":
		return procfsApp()
	case "env":
		enc := json.NewEncoder(os.Stdout)
		_ = enc.Encode(os.Environ())
		return 0
	case "exit3":
		// More than the 4 KiB tail, ending with the words a crash report needs.
		fmt.Fprint(os.Stderr, strings.Repeat("noise ", 1000))
		fmt.Fprint(os.Stderr, "heater relay stuck: last words")
		return 3
	case "selfkill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
		return 0
	case "sleep":
		fmt.Println("ready")
		time.Sleep(time.Minute)
		return 0
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Minute)
		return 0
	case "fork":
		// Leave a child behind in the process group, and exit.
		self, _ := os.Executable()
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), appModeEnv+"=sleep")
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(cmd.Process.Pid)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown app mode %q\n", mode)
	return 2
}

func probeApp() int {
	p := probe{UID: os.Getuid(), GID: os.Getgid(), Env: os.Environ()}
	p.Status = statusFields("/proc/self/status")
	// Per-thread attributes checked through the alias path as well (ATTACKS row 28).
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, tk := range tasks {
		p.TaskStatus = append(p.TaskStatus, statusFields(filepath.Join("/proc/self/task", tk.Name(), "status")))
	}
	p.NetNS, _ = os.Readlink("/proc/self/ns/net")
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		p.Interfaces = append(p.Interfaces, i.Name)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Connect(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 1
	}
	defer c.Close()
	p.GPIODeclared = result(c.GPIO(4).Set(ctx, true))
	p.GPIOUndeclared = result(c.GPIO(5).Set(ctx, true))

	p.HostAllowed = result(echoThrough(ctx, os.Getenv("SANDBOX_TEST_ALLOWED")))
	_, err = sdk.Dial(ctx, "tcp", os.Getenv("SANDBOX_TEST_DENIED"))
	p.HostDenied = result(err)
	// Around the proxy: straight to the allowed host's address.
	var d net.Dialer
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	conn, err := d.DialContext(dctx, "tcp", os.Getenv("SANDBOX_TEST_ALLOWED"))
	dcancel()
	if err == nil {
		conn.Close()
	}
	p.DirectDial = result(err)
	f, err := os.Open(os.Getenv("SANDBOX_TEST_SECRET"))
	if err == nil {
		f.Close()
	}
	p.SecretOpen = result(err)

	if err := json.NewEncoder(os.Stdout).Encode(p); err != nil {
		return 1
	}
	return 0
}

func echoThrough(ctx context.Context, addr string) error {
	conn, err := sdk.Dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("echo %q", line)
	}
	return nil
}

func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, sdk.ErrCapabilityDenied):
		return "capability_denied"
	case errors.Is(err, sdk.ErrHostDenied):
		return "host_denied"
	case errors.Is(err, os.ErrPermission):
		return "permission_denied"
	}
	return err.Error()
}

func statusFields(path string) map[string]string {
	b, err := os.ReadFile(path)
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	m := make(map[string]string)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Uid", "Gid", "Groups":
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}
