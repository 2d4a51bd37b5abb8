// Command testapp is the application the agent's tests run, speaking the runtime's local
// API (docs/app-sdk.md) directly. Its behaviour is fixed at build time with
// -ldflags "-X main.mode=MODE":
//
//	healthy     report healthy, read the water temperature every 100 ms, run until SIGTERM
//	crash       write a line to stderr and exit 3 at once
//	silent      never report healthy
//	undeclared  try GPIO 5 and the host evil.example:443 (both undeclared), then behave
//	            as healthy
//
// In every mode that runs, SIGUSR1 makes the app die of a segmentation fault (SIGSEGV, as a
// native app's bad pointer would; the Go runtime would turn a real one into exit status 2).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

var mode = "healthy"

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	segv := make(chan os.Signal, 1)
	signal.Notify(segv, syscall.SIGUSR1)
	if mode == "crash" {
		fmt.Fprintln(os.Stderr, "dw100: heater driver: index out of range")
		os.Exit(3)
	}
	conn, err := net.Dial("unix", os.Getenv("MOAT_SOCKET"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	rd := bufio.NewReader(conn)
	id := 0
	call := func(req map[string]any) map[string]any {
		id++
		req["id"] = id
		b, _ := json.Marshal(req)
		if _, err := conn.Write(append(b, '\n')); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			os.Exit(1)
		}
		line, err := rd.ReadBytes('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, "read:", err)
			os.Exit(1)
		}
		var resp map[string]any
		_ = json.Unmarshal(line, &resp)
		return resp
	}
	if mode == "undeclared" {
		resp := call(map[string]any{"op": "gpio.set", "pin": 5, "value": true})
		fmt.Fprintln(os.Stderr, "gpio 5:", resp["error"])
		fmt.Fprintln(os.Stderr, "evil.example:443:", connect(os.Getenv("HTTPS_PROXY"), "evil.example:443"))
	}
	if mode != "silent" {
		call(map[string]any{"op": "health.report", "status": "healthy"})
	}
	call(map[string]any{"op": "telemetry.publish", "topic": "whoami", "payload": map[string]any{"uid": os.Getuid(), "pid": os.Getpid(), "direct": dialDirect()}})
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-segv:
			fmt.Fprintln(os.Stderr, "dw100: wash cycle: segmentation fault")
			// The same process (exec keeps the PID) is killed by SIGSEGV with the default action.
			err := syscall.Exec("/bin/sh", []string{"sh", "-c", "kill -SEGV $$"}, nil)
			fmt.Fprintln(os.Stderr, "exec:", err)
			os.Exit(1)
		case <-tick.C:
			call(map[string]any{"op": "adc.read", "channel": 0})
		}
	}
}

// connect asks the proxy for a tunnel to target and returns its status line.
func connect(proxy, target string) string {
	u, err := url.Parse(proxy)
	if err != nil || u.Host == "" {
		return "no proxy"
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(line)
}

// dialDirect tries to reach the outside world without the proxy and says how it went.
func dialDirect() string {
	c, err := net.DialTimeout("tcp", "1.1.1.1:443", time.Second)
	if err != nil {
		return "refused"
	}
	c.Close()
	return "connected"
}
