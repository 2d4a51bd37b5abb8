package errqueue_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/agent/errqueue"
	"github.com/moat-iot/moat/internal/errreport"
)

// clock is a test clock that moves a millisecond per reading.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func config(t *testing.T, dir string) errqueue.Config {
	return errqueue.Config{Dir: dir, Now: newClock(time.Date(2025, 6, 7, 8, 0, 0, 0, time.UTC)).Now,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))}
}

func mustOpen(t *testing.T, cfg errqueue.Config) *errqueue.Queue {
	t.Helper()
	q, err := errqueue.Open(cfg)
	if err != nil {
		t.Fatalf("Open(%s) = %v", cfg.Dir, err)
	}
	return q
}

var base = time.Date(2025, 6, 7, 9, 0, 0, 0, time.UTC)

// report returns a valid report at base plus i seconds.
func report(i int) errreport.Report {
	at := base.Add(time.Duration(i) * time.Second)
	code := i % 256
	return errreport.Report{ID: errreport.NewID(at), Kind: errreport.AppCrash, At: at, ImagePath: "apps/dw100-app/1.0.0",
		ExitCode: &code, UptimeSeconds: int64(i), StderrTail: fmt.Sprintf("panic %d\n", i), Message: fmt.Sprintf("crash %d", i)}
}

func mustPut(t *testing.T, q *errqueue.Queue, rs ...errreport.Report) {
	t.Helper()
	for _, r := range rs {
		if err := q.Put(r); err != nil {
			t.Fatalf("Put(%s) = %v", r.ID, err)
		}
	}
}

func pending(t *testing.T, q *errqueue.Queue) []errreport.Report {
	t.Helper()
	rs, err := q.Pending()
	if err != nil {
		t.Fatalf("Pending() = %v", err)
	}
	return rs
}

func ids(rs []errreport.Report) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// split separates the reports the application made from the agent's drop reports, and sums
// the drops these count.
func split(rs []errreport.Report) (real []errreport.Report, dropped int64) {
	for _, r := range rs {
		if r.Kind == errreport.Agent && r.Code == errreport.CodeQueueFull {
			dropped += r.Dropped
			continue
		}
		real = append(real, r)
	}
	return real, dropped
}

// TestDeps: the queue runs on the device; it links no server-side package (STYLE, Layout).
func TestDeps(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, banned := range []string{"/internal/server", "/internal/fleet", "/internal/api", "/internal/store", "/internal/cli",
			"/internal/repo", "/internal/deviceca", "/internal/testenv"} {
			if strings.HasPrefix(dep, "github.com/moat-iot/moat"+banned) {
				t.Errorf("errqueue links %s", dep)
			}
		}
	}
}

func TestOpen_RefusesBadConfig(t *testing.T) {
	t.Parallel()
	good := config(t, t.TempDir())
	for name, fn := range map[string]func(*errqueue.Config){
		"no dir":        func(c *errqueue.Config) { c.Dir = "" },
		"no clock":      func(c *errqueue.Config) { c.Now = nil },
		"no logger":     func(c *errqueue.Config) { c.Logger = nil },
		"one report":    func(c *errqueue.Config) { c.MaxReports = 1 },
		"too few bytes": func(c *errqueue.Config) { c.MaxBytes = errreport.MaxReportBytes },
	} {
		cfg := good
		fn(&cfg)
		if _, err := errqueue.Open(cfg); err == nil {
			t.Errorf("Open(%s) = nil error, want a refusal", name)
		}
	}
}

// TestPut_PendingAck: reports come out oldest first, survive a reopen, are queued once per
// ID, and leave when acknowledged.
func TestPut_PendingAck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := mustOpen(t, config(t, dir))
	rs := []errreport.Report{report(3), report(1), report(2)}
	mustPut(t, q, rs...)
	mustPut(t, q, rs[0]) // again: a no-op
	again := rs[1]
	again.Message = "another copy"
	mustPut(t, q, again)
	want := []errreport.Report{rs[1], rs[2], rs[0]}
	if d := cmp.Diff(want, pending(t, q)); d != "" {
		t.Errorf("Pending() (-want +got):\n%s", d)
	}
	bad := report(4)
	bad.Kind = "meltdown"
	if err := q.Put(bad); err == nil {
		t.Error("Put(invalid report) = nil, want an error")
	}

	q = mustOpen(t, config(t, dir)) // a reboot
	if d := cmp.Diff(want, pending(t, q)); d != "" {
		t.Errorf("Pending() after reopen (-want +got):\n%s", d)
	}
	if err := q.Ack([]string{rs[1].ID, rs[0].ID, "01ARZ3NDEKTSV4RRFFQ69G5FAV"}); err != nil {
		t.Fatalf("Ack = %v", err)
	}
	if d := cmp.Diff([]string{rs[2].ID}, ids(pending(t, q))); d != "" {
		t.Errorf("Pending() after Ack (-want +got):\n%s", d)
	}
	q = mustOpen(t, config(t, dir))
	if d := cmp.Diff([]string{rs[2].ID}, ids(pending(t, q))); d != "" {
		t.Errorf("Pending() after Ack and reopen (-want +got):\n%s", d)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 1 {
		t.Errorf("queue files %v, want one", files)
	}
	for _, f := range files {
		if info, err := os.Stat(f); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", f, info.Mode(), err)
		}
	}
}

// TestBounds_Count: a queue of at most N reports keeps the newest N-1 and one report that
// counts every dropped one.
func TestBounds_Count(t *testing.T) {
	t.Parallel()
	cfg := config(t, t.TempDir())
	cfg.MaxReports = 5
	q := mustOpen(t, cfg)
	var all []errreport.Report
	for i := range 12 {
		all = append(all, report(i))
		mustPut(t, q, all[i])
		if s := q.Stats(); s.Reports > cfg.MaxReports {
			t.Fatalf("after %d reports Stats() = %+v, more than %d", i+1, s, cfg.MaxReports)
		}
	}
	if s := q.Stats(); s.Dropped != 8 || s.Reports != 5 {
		t.Errorf("Stats() = %+v, want 5 reports and 8 dropped", s)
	}
	got := pending(t, q)
	real, dropped := split(got)
	if d := cmp.Diff(ids(all[8:]), ids(real)); d != "" {
		t.Errorf("kept reports (-want +got):\n%s", d)
	}
	if dropped != 8 || len(got) != 5 {
		t.Errorf("Pending() = %d reports counting %d dropped, want 5 counting 8", len(got), dropped)
	}
	// Dropping goes on after the drop report was sealed into the queue (by Pending): its
	// count is carried into the next one when it is dropped in turn.
	for i := 12; i < 30; i++ {
		all = append(all, report(i))
		mustPut(t, q, all[i])
	}
	got = pending(t, q)
	real, dropped = split(got)
	if int64(len(real))+dropped != int64(len(all)) || len(got) > cfg.MaxReports {
		t.Errorf("after %d reports: %d kept and %d counted as dropped in %d files; want every report kept or counted, in at most %d files",
			len(all), len(real), dropped, len(got), cfg.MaxReports)
	}
	if last := real[len(real)-1]; last.ID != all[len(all)-1].ID {
		t.Errorf("newest kept = %s, want the newest put %s", last.ID, all[len(all)-1].ID)
	}
}

// TestBounds_Bytes: the report files never take more than MaxBytes, the drop report
// included.
func TestBounds_Bytes(t *testing.T) {
	t.Parallel()
	cfg := config(t, t.TempDir())
	cfg.MaxBytes = 2 * errreport.MaxReportBytes
	q := mustOpen(t, cfg)
	n := 0
	for i := range 80 {
		r := report(i)
		r.StderrTail = strings.Repeat("x", errreport.MaxStderrTailBytes)
		mustPut(t, q, r)
		n++
		if s := q.Stats(); s.Bytes > cfg.MaxBytes {
			t.Fatalf("after %d reports Stats() = %+v, more than %d bytes", n, s, cfg.MaxBytes)
		}
	}
	var size int64
	files, _ := filepath.Glob(filepath.Join(cfg.Dir, "*.json"))
	for _, f := range files {
		info, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		size += info.Size()
	}
	if size > cfg.MaxBytes {
		t.Errorf("queue files hold %d bytes, more than %d", size, cfg.MaxBytes)
	}
	real, dropped := split(pending(t, q))
	if int64(len(real))+dropped != int64(n) || dropped == 0 {
		t.Errorf("%d kept + %d dropped, want %d in all, some dropped", len(real), dropped, n)
	}
}

// TestBounds_ShrunkOnOpen: reopened with smaller bounds, the queue drops its oldest.
func TestBounds_ShrunkOnOpen(t *testing.T) {
	t.Parallel()
	cfg := config(t, t.TempDir())
	rs := []errreport.Report{report(1), report(2), report(3), report(4)}
	mustPut(t, mustOpen(t, cfg), rs...)
	cfg.MaxReports = 3
	real, dropped := split(pending(t, mustOpen(t, cfg)))
	if d := cmp.Diff(ids(rs[2:]), ids(real)); d != "" || dropped != 2 {
		t.Errorf("after shrinking: dropped %d, kept (-want +got):\n%s; want the newest 2 kept and 2 dropped", dropped, d)
	}
}

// TestOpen_CleansUpAndMovesCorruptAside: a crash leaves temporary files (removed); a file
// system may leave truncated or garbage files (moved to corrupt/ and reported).
func TestOpen_CleansUpAndMovesCorruptAside(t *testing.T) {
	t.Parallel()
	cfg := config(t, t.TempDir())
	q := mustOpen(t, cfg)
	good, truncated, moved, r5, r9 := report(1), report(2), report(3), report(5), report(9)
	mustPut(t, q, good, truncated, moved)
	name := func(r errreport.Report) string {
		return r.At.UTC().Format("20060102T150405.000000000Z") + "_" + r.ID + ".json"
	}
	write := func(n, data string) {
		if err := os.WriteFile(filepath.Join(cfg.Dir, n), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(filepath.Join(cfg.Dir, name(truncated)))
	if err != nil {
		t.Fatal(err)
	}
	write(name(truncated), string(data[:len(data)/2]))
	// A valid report under another report's name.
	if err := os.Rename(filepath.Join(cfg.Dir, name(moved)), filepath.Join(cfg.Dir, name(r9))); err != nil {
		t.Fatal(err)
	}
	write(".tmp-123456", `{"id":`)
	write(name(r5), "\x00\x00\x00\x00")
	write("notes.txt", "hello")
	write("dropped.json", `{"kind":"agent"`)
	if err := os.Mkdir(filepath.Join(cfg.Dir, "stray"), 0o700); err != nil {
		t.Fatal(err)
	}

	q = mustOpen(t, cfg)
	real, corrupt := byCode(pending(t, q))
	if d := cmp.Diff([]string{good.ID}, ids(real)); d != "" || len(corrupt) != 1 {
		t.Fatalf("Pending() = reports %v and %d queue_corrupt reports, want the good report and one queue_corrupt report", ids(real), len(corrupt))
	}
	for _, n := range []string{name(truncated), name(r9), name(r5), "notes.txt", "dropped.json"} {
		if !strings.Contains(corrupt[0].Message, n) {
			t.Errorf("queue_corrupt report %q does not name %s", corrupt[0].Message, n)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, ".tmp-123456")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left after Open: %v", err)
	}
	aside, _ := os.ReadDir(filepath.Join(cfg.Dir, errqueue.CorruptDir))
	if len(aside) != 5 {
		t.Errorf("corrupt/ holds %d files, want 5", len(aside))
	}
	// A file that goes bad after Open is moved aside when read, and reported.
	write(name(good), "garbage")
	real, corrupt = byCode(pending(t, q))
	if len(real) != 0 || len(corrupt) != 2 || !strings.Contains(corrupt[1].Message, name(good)) {
		t.Errorf("Pending() after a file went bad = %v and %+v, want two queue_corrupt reports, the second naming %s", ids(real), corrupt, name(good))
	}
}

// byCode separates the application's reports from the agent's queue_corrupt reports.
func byCode(rs []errreport.Report) (real, corrupt []errreport.Report) {
	for _, r := range rs {
		if r.Code == errreport.CodeQueueCorrupt {
			corrupt = append(corrupt, r)
		} else {
			real = append(real, r)
		}
	}
	return real, corrupt
}

// TestOpen_CorruptDirIsBounded: corrupt/ keeps the newest files only.
func TestOpen_CorruptDirIsBounded(t *testing.T) {
	t.Parallel()
	cfg := config(t, t.TempDir())
	for round := range 5 {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			if err := os.WriteFile(filepath.Join(cfg.Dir, fmt.Sprintf("junk-%d-%d", round, i)), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		mustOpen(t, cfg)
	}
	aside, _ := os.ReadDir(filepath.Join(cfg.Dir, errqueue.CorruptDir))
	if len(aside) != 32 || !strings.HasSuffix(aside[len(aside)-1].Name(), "junk-4-9") {
		t.Errorf("corrupt/ holds %d files, last %s; want the newest 32", len(aside), aside[len(aside)-1].Name())
	}
}

// power is a power cut at the k-th file operation: it and every later one fail.
type power struct {
	n, k  int
	torn  bool // the cut tears a write in half
	off   bool
	trace []string
}

var errPowerCut = errors.New("power cut")

func (p *power) fault(op string) error {
	if p.off {
		return errPowerCut
	}
	p.trace = append(p.trace, op)
	if p.n == p.k {
		p.off = true
		if p.torn && op == "write" {
			return fmt.Errorf("%w: %w", errPowerCut, errqueue.ErrShortWrite)
		}
		return errPowerCut
	}
	p.n++
	return nil
}

// TestPut_CrashAtEveryStep cuts the power at every file operation of a Put, into a queue
// with room and into a full one (which drops and counts), with whole and torn writes; after
// the reboot the queue holds every earlier report or counts it as dropped, holds the new one
// whole or not at all, and has no temporary or corrupt files.
func TestPut_CrashAtEveryStep(t *testing.T) {
	t.Parallel()
	for _, full := range []bool{false, true} {
		for _, torn := range []bool{false, true} {
			t.Run(fmt.Sprintf("full=%t/torn=%t", full, torn), func(t *testing.T) {
				t.Parallel()
				steps := 0
				for k := 0; ; k++ {
					if k > 100 {
						t.Fatal("Put never finished without a power cut")
					}
					cfg := config(t, t.TempDir())
					cfg.MaxReports = 4
					earlier := []errreport.Report{report(1), report(2), report(3)}
					if full {
						earlier = append(earlier, report(4))
					}
					mustPut(t, mustOpen(t, cfg), earlier...)
					p := &power{k: k, torn: torn}
					q, err := errqueue.OpenFaulty(cfg, p.fault)
					if err != nil {
						t.Fatalf("OpenFaulty = %v", err)
					}
					r := report(10)
					putErr := q.Put(r)
					if !p.off && putErr != nil {
						t.Fatalf("Put without a power cut = %v", putErr)
					}

					// Reboot.
					q = mustOpen(t, cfg)
					got := pending(t, q)
					real, dropped := split(got)
					var have []string
					hasNew := false
					for _, x := range real {
						if x.ID == r.ID {
							hasNew = true
							if d := cmp.Diff(r, x); d != "" {
								t.Errorf("k=%d (%v): the new report is not whole (-want +got):\n%s", k, p.trace, d)
							}
							continue
						}
						if x.Kind != errreport.AppCrash {
							t.Errorf("k=%d (%v): unexpected report %+v after reboot", k, p.trace, x)
						}
						have = append(have, x.ID)
					}
					if putErr == nil && !hasNew {
						t.Errorf("k=%d: Put returned nil but the report is gone after the reboot", k)
					}
					missing := len(earlier) - len(have)
					if int64(missing) > dropped {
						t.Errorf("k=%d (%v): %d earlier reports missing, only %d counted as dropped", k, p.trace, missing, dropped)
					}
					// The count is written before the deletes, so a cut between them counts
					// the interrupted Put's two drops that did not happen: an over-count,
					// never more.
					if dropped > int64(missing)+2 {
						t.Errorf("k=%d (%v): %d counted as dropped with %d missing, want at most 2 more", k, p.trace, dropped, missing)
					}
					if len(got) > cfg.MaxReports {
						t.Errorf("k=%d: %d files after the reboot, more than %d", k, len(got), cfg.MaxReports)
					}
					left, _ := filepath.Glob(filepath.Join(cfg.Dir, ".tmp-*"))
					aside, _ := os.ReadDir(filepath.Join(cfg.Dir, errqueue.CorruptDir))
					if len(left) > 0 || len(aside) > 0 {
						t.Errorf("k=%d (%v): after the reboot temporary files %v, corrupt files %d; want none", k, p.trace, left, len(aside))
					}
					if !p.off {
						steps = k
						break
					}
				}
				if steps < 5 {
					t.Errorf("a Put took %d file operations; the test cut fewer than expected", steps)
				}
			})
		}
	}
}

// TestToWire: the client's wire type carries every field, as the same JSON.
func TestToWire(t *testing.T) {
	t.Parallel()
	code := 3
	for _, r := range []errreport.Report{
		{ID: errreport.NewID(base), Kind: errreport.AppCrash, At: base, ImagePath: "apps/a/1", ImageVersion: "1", Code: "c", Message: "m",
			ExitCode: &code, UptimeSeconds: 9, StderrTail: "s"},
		{ID: errreport.NewID(base), Kind: errreport.UpdateFailed, At: base, Step: errreport.StepBoot, Target: "os/o/2"},
		{ID: errreport.NewID(base), Kind: errreport.CapabilityDenied, At: base, Capability: "gpio:5"},
		{ID: errreport.NewID(base), Kind: errreport.Agent, At: base, Dropped: 7},
		{ID: errreport.NewID(base), Kind: errreport.AppCrash, At: base, ImagePath: "apps/a/1", Signal: "SIGSEGV"},
	} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(errqueue.ToWire(r))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("ToWire JSON\n got %s\nwant %s", got, want)
		}
	}
}

// TestOpen_ClockBefore1970: a device whose clock is far off still gets its synthetic
// reports (they would be invalid before 1970).
func TestOpen_ClockBefore1970(t *testing.T) {
	t.Parallel()
	cfg := config(t, t.TempDir())
	cfg.Now = func() time.Time { return time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC) }
	cfg.MaxReports = 3
	if err := os.WriteFile(filepath.Join(cfg.Dir, "junk"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	q := mustOpen(t, cfg)
	mustPut(t, q, report(1), report(2), report(3))
	got := pending(t, q)
	if len(got) != 3 || !got[0].At.Equal(time.Unix(0, 0)) {
		t.Errorf("Pending() = %+v, want 3 reports, the synthetic ones at 1970", got)
	}
}
