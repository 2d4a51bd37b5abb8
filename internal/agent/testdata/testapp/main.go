// Command testapp is the application the agent's tests run, speaking the runtime's local
// API (docs/app-sdk.md) directly. Its behaviour is fixed at build time with
// -ldflags "-X main.mode=MODE":
//
//	healthy     report healthy, read the water temperature every 100 ms, run until SIGTERM
//	crash       write a line to stderr and exit 3 at once
//	silent      never report healthy
//	undeclared  try GPIO 5 (undeclared), then behave as healthy
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

var mode = "healthy"

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
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
	}
	if mode != "silent" {
		call(map[string]any{"op": "health.report", "status": "healthy"})
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			call(map[string]any{"op": "adc.read", "channel": 0})
		}
	}
}
