package agent_test

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFootprint measures moat-agent (the device build) on this machine: resident memory
// while idle and its peak while it downloads, verifies and installs a 10 MiB and then a
// 100 MiB image (streamed: the peak must not grow with the image), and the CPU it uses
// while idle. It runs only with MOAT_FOOTPRINT=1 (scripts/footprint.sh), which prints the
// figures; it fails if memory grows with the image size.
func TestFootprint(t *testing.T) {
	if os.Getenv("MOAT_FOOTPRINT") != "1" {
		t.Skip("set MOAT_FOOTPRINT=1 (scripts/footprint.sh)")
	}
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	state := t.TempDir()
	p := f.spawnWith(t, d, state, "", "2s")
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))
	time.Sleep(3 * time.Second)
	pid := p.cmd.Process.Pid
	idle := status(t, pid, "VmRSS")
	cpu0 := cpuTicks(t, pid)
	time.Sleep(10 * time.Second)
	idleTicks := cpuTicks(t, pid) - cpu0

	peaks := map[int]int64{}
	for i, mib := range []int{10, 100} {
		payload := make([]byte, mib<<20)
		rand.Read(payload) // incompressible: the package is as large as the payload
		im := f.PublishAppFiles("dw100-app", fmt.Sprintf("1.%d.0", i+1), 1, "DW100", testApp(t, "healthy"), map[string][]byte{"share/blob.bin": payload})
		f.deploy(im.Path)
		peak := int64(0)
		deadline := time.Now().Add(3 * time.Minute)
		for !installed(f, t, d.ID, im.Path) {
			if rss := status(t, pid, "VmRSS"); rss > peak {
				peak = rss
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d MiB image not installed within 3 minutes", mib)
			}
			time.Sleep(20 * time.Millisecond)
		}
		peaks[mib] = peak
	}
	fmt.Printf("moat-agent idle RSS: %d KiB\n", idle)
	fmt.Printf("moat-agent CPU while idle for 10 s (check interval 2 s): %d clock ticks (%.2f s)\n", idleTicks, float64(idleTicks)/100)
	fmt.Printf("moat-agent peak RSS while installing a 10 MiB image: %d KiB\n", peaks[10])
	fmt.Printf("moat-agent peak RSS while installing a 100 MiB image: %d KiB\n", peaks[100])
	if peaks[100] > peaks[10]+16<<10 {
		t.Errorf("peak RSS grew from %d KiB (10 MiB image) to %d KiB (100 MiB image): the download does not stream", peaks[10], peaks[100])
	}
}

func installed(f *fleet, t *testing.T, id, path string) bool {
	ok, _ := attested(f, t, id, f.os.Path, path)()
	return ok
}

// status reads a field of /proc/PID/status in KiB.
func status(t *testing.T, pid int, field string) int64 {
	t.Helper()
	fh, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// cpuTicks is the process's user plus system time in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	s, _ := strconv.ParseInt(fields[12], 10, 64)
	return u + s
}
