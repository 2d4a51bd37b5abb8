package spool_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/agent/spool"
)

// power is a power cut at the k-th file operation: it and every later one fail.
type power struct {
	n, k  int
	torn  bool // the cut tears a write in half
	off   bool
	trace []spool.Op
}

var errPowerCut = errors.New("power cut")

func (p *power) fault(op spool.Op) error {
	if p.off {
		return errPowerCut
	}
	p.trace = append(p.trace, op)
	if p.n == p.k {
		p.off = true
		if p.torn && op == spool.OpWrite {
			return fmt.Errorf("%w: %w", errPowerCut, spool.ErrShortWrite)
		}
		return errPowerCut
	}
	p.n++
	return nil
}

// fate is what a record may be after the reboot.
type fate int

const (
	gone    fate = iota // never written, or deleted and the Delete returned
	there               // Put (or Rename) returned: present, whole, once
	unknown             // its operation was cut: present whole, or absent
)

// model follows the sequence as it runs: each step marks the records it touches unknown
// before it starts and settles them when it returns nil.
type model struct {
	fates map[string]fate
	// sideOnce: WriteFile(side) returned and the record it carries is not being deleted:
	// it is in the side file or in r6.json, exactly once.
	sideOnce bool
}

// TestQueue_CrashAtEveryStep counts the N file operations of an enqueue, delete, drop and
// rename sequence, then cuts the power at each k = 0..N in turn (whole and torn writes; at
// N the sequence completes),
// reboots and checks the invariants (ATTACKS row 24): every record whose Delete returned is
// gone, every record whose Put returned is there exactly once and whole, no torn record is
// readable (Open finds no bad file), and no temporary file is left or counted.
func TestQueue_CrashAtEveryStep(t *testing.T) {
	t.Parallel()
	for _, torn := range []bool{false, true} {
		t.Run(fmt.Sprintf("torn=%t", torn), func(t *testing.T) {
			t.Parallel()
			n := -1
			for k := 0; n < 0 || k <= n; k++ {
				if k > 200 {
					t.Fatal("the sequence never finished without a power cut")
				}
				p := &power{k: k, torn: torn}
				if n < 0 {
					p.k = 1 << 30 // the first run counts the operations
				}
				dir := t.TempDir()
				m := crashRun(t, dir, p)
				if n < 0 {
					n = len(p.trace)
					if n < 30 {
						t.Fatalf("the sequence made %d file operations (%v), fewer than expected", n, p.trace)
					}
					k = -1
					continue
				}
				if p.off != (k < n) {
					t.Fatalf("k=%d of %d: power cut %t", k, n, p.off)
				}
				checkAfterReboot(t, dir, k, p.trace, m)
			}
		})
	}
}

// crashRun puts r1 and r2, then runs the sequence on a queue whose file operations ask
// p.fault, until the first error.
func crashRun(t *testing.T, dir string, p *power) *model {
	t.Helper()
	q, _ := mustOpen(t, config(dir))
	mustPut(t, q, "r1.json", "r2.json")
	m := &model{fates: map[string]fate{"r1.json": there, "r2.json": there}}
	cfg := config(dir)
	cfg.Fault = p.fault
	q, bad, err := spool.Open(cfg)
	if err != nil || len(bad) > 0 {
		t.Fatalf("Open = %v, %v", bad, err)
	}
	put := func(name string) func() error {
		return func() error {
			m.fates[name] = unknown
			if err := q.Put(name, content(name), ""); err != nil {
				return err
			}
			m.fates[name] = there
			return nil
		}
	}
	del := func(names ...string) func() error {
		return func() error {
			for _, n := range names {
				m.fates[n] = unknown
				if n == "r6.json" {
					m.sideOnce = false
				}
			}
			if err := q.Delete(names...); err != nil {
				return err
			}
			for _, n := range names {
				m.fates[n] = gone
			}
			return nil
		}
	}
	steps := []func() error{
		put("r3.json"),
		put("r4.json"), // full: r1 r2 r3 r4
		del("r1.json", "r3.json"),
		put("r5.json"),
		func() error { // drop the oldest (r2) to make room for two
			m.fates["r2.json"] = unknown
			return q.MakeRoom(2, 0, func([]spool.Entry[string]) int { return 0 }, func(e spool.Entry[string]) {
				m.fates[e.Name] = gone
			})
		},
		func() error {
			if err := q.WriteFile(side, content("r6.json")); err != nil {
				return err
			}
			m.sideOnce = true
			return nil
		},
		func() error {
			m.fates["r6.json"] = unknown
			if err := q.Rename(side, "r6.json", ""); err != nil {
				return err
			}
			m.fates["r6.json"] = there
			return nil
		},
		put("r7.json"),
		del("r4.json", "r6.json"),
	}
	for _, step := range steps {
		if err := step(); err != nil {
			if !errors.Is(err, errPowerCut) {
				t.Fatalf("k=%d: a step failed with %v, not the power cut", p.k, err)
			}
			break
		}
	}
	return m
}

func checkAfterReboot(t *testing.T, dir string, k int, trace []spool.Op, m *model) {
	t.Helper()
	q, bad, err := spool.Open(config(dir))
	if err != nil {
		t.Fatalf("k=%d (%v): Open after the reboot = %v", k, trace, err)
	}
	if len(bad) > 0 {
		t.Errorf("k=%d (%v): Open after the reboot found bad (torn) records %v", k, trace, bad)
	}
	for name, f := range m.fates {
		switch has := q.Has(name); {
		case f == there && !has:
			t.Errorf("k=%d (%v): %s was put but is gone", k, trace, name)
		case f == gone && has:
			t.Errorf("k=%d (%v): %s was deleted but is back", k, trace, name)
		}
	}
	if m.sideOnce {
		_, err := os.Stat(filepath.Join(dir, side))
		if inSide, inQueue := err == nil, q.Has("r6.json"); inSide == inQueue {
			t.Errorf("k=%d (%v): r6 in the side file %t, in the queue %t; want exactly one", k, trace, inSide, inQueue)
		}
	}
	// What is on disk is what the queue counts, whole, and nothing else.
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	var size int64
	for _, de := range des {
		if strings.HasPrefix(de.Name(), spool.TempPrefix) {
			t.Errorf("k=%d (%v): temporary file %s left after the reboot", k, trace, de.Name())
		}
		if de.Name() == side {
			continue
		}
		files = append(files, de.Name())
		data, err := q.Read(de.Name())
		if err != nil || string(data) != string(content(de.Name())) {
			t.Errorf("k=%d (%v): %s reads %q, %v; want it whole", k, trace, de.Name(), data, err)
		}
		size += int64(len(data))
	}
	if !slices.Equal(files, names(q)) || q.Bytes() != size {
		t.Errorf("k=%d (%v): the queue counts %v (%d bytes); the directory holds %v (%d bytes)", k, trace, names(q), q.Bytes(), files, size)
	}
}
