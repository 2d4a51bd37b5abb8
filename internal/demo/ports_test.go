package demo_test

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/demo"
)

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := new(net.ListenConfig).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDemo_BusyPorts is defect 1: with either address taken, and with a second demo
// started beside the first on the same addresses, the demo comes up on free ports with a
// fresh platform operator, instead of exiting because its retry found the operator its
// first attempt had made.
func TestDemo_BusyPorts(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(cfg demo.Config) (*demo.Demo, string) {
		t.Helper()
		var out strings.Builder
		cfg.DataDir = t.TempDir()
		d, err := demo.Start(t.Context(), cfg, quiet, &out)
		if err != nil {
			t.Fatalf("demo.Start(%s, %s) = %v; output %q", cfg.Addr, cfg.DeviceAddr, err, out.String())
		}
		t.Cleanup(func() { d.Close() })
		if d.Result.OperatorToken == "" {
			t.Errorf("demo.Start(%s, %s): no operator token", cfg.Addr, cfg.DeviceAddr)
		}
		return d, out.String()
	}
	t.Run("BusyAddr", func(t *testing.T) {
		busy := occupy(t)
		d, out := start(demo.Config{Addr: busy, DeviceAddr: "127.0.0.1:0"})
		if d.Result.URL == "https://"+busy || !strings.Contains(out, busy+" is in use") {
			t.Errorf("URL %s, output %q; want another port than busy %s, and a note", d.Result.URL, out, busy)
		}
	})
	t.Run("BusyDeviceAddr", func(t *testing.T) {
		busy := occupy(t)
		d, out := start(demo.Config{Addr: "127.0.0.1:0", DeviceAddr: busy})
		if d.Result.DeviceURL == "https://"+busy || !strings.Contains(out, busy+" is in use") {
			t.Errorf("device URL %s, output %q; want another port than busy %s, and a note", d.Result.DeviceURL, out, busy)
		}
	})
	t.Run("TwoDemos", func(t *testing.T) {
		cfg := demo.Config{Addr: freeAddr(t), DeviceAddr: freeAddr(t)}
		first, _ := start(cfg)
		second, out := start(cfg)
		if first.Result.URL != "https://"+cfg.Addr || first.Result.DeviceURL != "https://"+cfg.DeviceAddr {
			t.Errorf("first demo on %s, %s; want the addresses it was given, %s, %s", first.Result.URL, first.Result.DeviceURL, cfg.Addr, cfg.DeviceAddr)
		}
		if second.Result.URL == first.Result.URL || second.Result.DeviceURL == first.Result.DeviceURL {
			t.Errorf("second demo on %s, %s; want other ports than the first's", second.Result.URL, second.Result.DeviceURL)
		}
		if strings.Count(out, "is in use") != 2 {
			t.Errorf("second demo's output %q; want a note for each busy address", out)
		}
	})
}
