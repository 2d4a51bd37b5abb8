package spool_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/agent/spool"
)

const side = "side.json" // a file kept beside the records (Decode skips it)

// content is the only data a record called name may hold: a torn or foreign file fails
// decode.
func content(name string) []byte {
	return []byte("record " + name + " " + strings.Repeat("x", 40) + "\n")
}

func decode(name string, data []byte) (string, error) {
	if name == side {
		return "", spool.ErrSkip
	}
	if string(data) != string(content(name)) {
		return "", fmt.Errorf("%s holds %q", name, data)
	}
	return strings.TrimSuffix(name, ".json"), nil
}

func config(dir string) spool.Config[string] {
	return spool.Config[string]{Dir: dir, MaxFiles: 4, MaxBytes: 1 << 10, MaxFileBytes: 128, Decode: decode}
}

func mustOpen(t *testing.T, cfg spool.Config[string]) (*spool.Queue[string], []spool.Bad) {
	t.Helper()
	q, bad, err := spool.Open(cfg)
	if err != nil {
		t.Fatalf("Open(%s) = %v", cfg.Dir, err)
	}
	return q, bad
}

func mustPut(t *testing.T, q *spool.Queue[string], names ...string) {
	t.Helper()
	for _, n := range names {
		if err := q.Put(n, content(n), strings.TrimSuffix(n, ".json")); err != nil {
			t.Fatalf("Put(%s) = %v", n, err)
		}
	}
}

func names(q *spool.Queue[string]) []string {
	out := []string{}
	for _, e := range q.Entries() {
		out = append(out, e.Name)
	}
	return out
}

func TestOpen_RefusesBadConfig(t *testing.T) {
	t.Parallel()
	good := config(t.TempDir())
	for name, fn := range map[string]func(*spool.Config[string]){
		"no dir":       func(c *spool.Config[string]) { c.Dir = "" },
		"no files":     func(c *spool.Config[string]) { c.MaxFiles = 0 },
		"no bytes":     func(c *spool.Config[string]) { c.MaxBytes = 0 },
		"no file size": func(c *spool.Config[string]) { c.MaxFileBytes = 0 },
		"no decode":    func(c *spool.Config[string]) { c.Decode = nil },
	} {
		cfg := good
		fn(&cfg)
		if _, _, err := spool.Open(cfg); err == nil {
			t.Errorf("Open(%s) = nil error, want a refusal", name)
		}
	}
	bad := spool.Config[string]{}
	if err := bad.Validate(); err == nil || strings.Count(err.Error(), "\n") != 4 {
		t.Errorf("Validate(zero) = %v, want all five problems", err)
	}
}

// TestQueue_PutListDelete: records list by name, survive a reopen with their sizes, are
// replaced by name, and leave when deleted.
func TestQueue_PutListDelete(t *testing.T) {
	t.Parallel()
	cfg := config(t.TempDir())
	q, _ := mustOpen(t, cfg)
	mustPut(t, q, "3.json", "1.json", "2.json", "1.json")
	want := []string{"1.json", "2.json", "3.json"}
	if d := cmp.Diff(want, names(q)); d != "" {
		t.Errorf("Entries() (-want +got):\n%s", d)
	}
	size := int64(3 * len(content("1.json")))
	if q.Len() != 3 || q.Bytes() != size {
		t.Errorf("Len(), Bytes() = %d, %d, want 3, %d", q.Len(), q.Bytes(), size)
	}
	q, bad := mustOpen(t, cfg)
	if d := cmp.Diff(want, names(q)); d != "" || len(bad) != 0 || q.Bytes() != size {
		t.Errorf("after reopen: Entries() (-want +got):\n%s bad %v, Bytes() %d", d, bad, q.Bytes())
	}
	if e := q.Entries()[1]; e.Meta != "2" || e.Size != int64(len(content("2.json"))) {
		t.Errorf("Entries()[1] = %+v, want the meta Decode returned and the file's size", e)
	}
	if err := q.Delete("1.json", "3.json", "nothing.json"); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if d := cmp.Diff([]string{"2.json"}, names(q)); d != "" || q.Has("1.json") {
		t.Errorf("after Delete: Entries() (-want +got):\n%s", d)
	}
	if des, _ := os.ReadDir(cfg.Dir); len(des) != 1 {
		t.Errorf("dir holds %d files, want 1", len(des))
	}
}

// TestOpen_RemovesTempFilesReturnsBad: a crash's temporary files are removed; files
// Decode refuses are returned and left for the owner; skipped files and directories stay.
func TestOpen_RemovesTempFilesReturnsBad(t *testing.T) {
	t.Parallel()
	cfg := config(t.TempDir())
	q, _ := mustOpen(t, cfg)
	mustPut(t, q, "1.json")
	for name, data := range map[string]string{
		".tmp-123": "record 2.json", // a write the crash cut short
		"2.json":   "record 2.j",    // torn by a file system that lost data
		"3.json":   strings.Repeat("y", 200),
		side:       "kept",
	} {
		if err := os.WriteFile(filepath.Join(cfg.Dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(cfg.Dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	q, bad := mustOpen(t, cfg)
	var badNames []string
	for _, b := range bad {
		badNames = append(badNames, b.Name)
	}
	if d := cmp.Diff([]string{"2.json", "3.json"}, badNames); d != "" {
		t.Errorf("Open bad files (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"1.json"}, names(q)); d != "" {
		t.Errorf("Entries() (-want +got):\n%s", d)
	}
	var left []string
	des, _ := os.ReadDir(cfg.Dir)
	for _, de := range des {
		left = append(left, de.Name())
	}
	if d := cmp.Diff([]string{"1.json", "2.json", "3.json", side, "sub"}, left); d != "" {
		t.Errorf("dir after Open (-want +got):\n%s", d)
	}
}

// TestPut_RefusesOverCapsAndLongRecords: Put never grows the queue past its caps, nor
// writes a record Open could not read back.
func TestPut_RefusesOverCapsAndLongRecords(t *testing.T) {
	t.Parallel()
	cfg := config(t.TempDir())
	cfg.MaxBytes = int64(3 * len(content("1.json")))
	q, _ := mustOpen(t, cfg)
	mustPut(t, q, "1.json", "2.json", "3.json")
	if err := q.Put("4.json", content("4.json"), "4"); !errors.Is(err, spool.ErrFull) {
		t.Errorf("Put over MaxBytes = %v, want ErrFull", err)
	}
	mustPut(t, q, "3.json") // a replacement fits
	if err := q.Put("0.json", make([]byte, cfg.MaxFileBytes+1), "0"); err == nil {
		t.Error("Put(a record over MaxFileBytes) = nil, want an error")
	}
	cfg.MaxBytes, cfg.MaxFiles = 1<<20, 3
	q, _ = mustOpen(t, cfg)
	if err := q.Put("4.json", content("4.json"), "4"); !errors.Is(err, spool.ErrFull) {
		t.Errorf("Put over MaxFiles = %v, want ErrFull", err)
	}
	if q.Len() != 3 {
		t.Errorf("Len() = %d after refusals, want 3", q.Len())
	}
}

// TestQueue_RejectsNamesOutsideDir: a record name is one file of the queue's directory;
// a path, a temporary name or a dot name is refused by every operation.
func TestQueue_RejectsNamesOutsideDir(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	cfg := config(filepath.Join(parent, "q"))
	q, _ := mustOpen(t, cfg)
	if err := os.WriteFile(filepath.Join(parent, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../secret", "../evil.json", "a/b.json", "", ".", "..", spool.TempPrefix + "x"} {
		if err := q.Put(name, []byte("x"), ""); err == nil {
			t.Errorf("Put(%q) = nil, want a refusal", name)
		}
		if err := q.WriteFile(name, []byte("x")); err == nil {
			t.Errorf("WriteFile(%q) = nil, want a refusal", name)
		}
		if _, err := q.Read(name); err == nil {
			t.Errorf("Read(%q) = nil error, want a refusal", name)
		}
		if err := q.Delete(name); err == nil {
			t.Errorf("Delete(%q) = nil, want a refusal", name)
		}
		if err := q.MoveAside(name, "sub", "x"); err == nil {
			t.Errorf("MoveAside(%q) = nil, want a refusal", name)
		}
	}
	if _, err := os.Stat(filepath.Join(parent, "secret")); err != nil {
		t.Errorf("the file outside the queue: %v", err)
	}
	if _, err := os.Stat(filepath.Join(parent, "evil.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file was written outside the queue: %v", err)
	}
}

// TestMakeRoom_DropsVictimsUntilFits: the owner's victim is dropped until the record fits.
func TestMakeRoom_DropsVictimsUntilFits(t *testing.T) {
	t.Parallel()
	cfg := config(t.TempDir())
	q, _ := mustOpen(t, cfg)
	mustPut(t, q, "1.json", "2.json", "3.json", "4.json")
	var dropped []string
	last := func(es []spool.Entry[string]) int { return len(es) - 1 }
	if err := q.MakeRoom(2, 0, last, func(e spool.Entry[string]) { dropped = append(dropped, e.Name) }); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"4.json", "3.json"}, dropped); d != "" {
		t.Errorf("dropped (-want +got):\n%s", d)
	}
	q, _ = mustOpen(t, cfg)
	if d := cmp.Diff([]string{"1.json", "2.json"}, names(q)); d != "" {
		t.Errorf("after reopen (-want +got):\n%s", d)
	}
}

// TestSideFiles: a file written beside the records is not counted until renamed into the
// queue; MoveAside and TrimDir keep a bounded subdirectory.
func TestSideFiles(t *testing.T) {
	t.Parallel()
	cfg := config(t.TempDir())
	q, _ := mustOpen(t, cfg)
	mustPut(t, q, "1.json")
	if err := q.WriteFile(side, content("2.json")); err != nil {
		t.Fatal(err)
	}
	if err := q.WriteFile("1.json", content("1.json")); err == nil {
		t.Error("WriteFile(a record) = nil, want an error")
	}
	if q.Len() != 1 {
		t.Errorf("Len() = %d with a side file, want 1", q.Len())
	}
	if err := q.Rename(side, "2.json", "2"); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"1.json", "2.json"}, names(q)); d != "" || q.Bytes() != 2*int64(len(content("1.json"))) {
		t.Errorf("after Rename: Entries() (-want +got):\n%s Bytes() %d", d, q.Bytes())
	}
	if err := os.Mkdir(filepath.Join(cfg.Dir, "aside"), 0o700); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"1.json", "2.json"} {
		if err := q.MoveAside(n, "aside", fmt.Sprintf("%d-%s", i, n)); err != nil {
			t.Fatal(err)
		}
	}
	if q.Len() != 0 || q.Bytes() != 0 {
		t.Errorf("after MoveAside: Len(), Bytes() = %d, %d, want 0, 0", q.Len(), q.Bytes())
	}
	if err := q.TrimDir("aside", 1); err != nil {
		t.Fatal(err)
	}
	des, _ := os.ReadDir(filepath.Join(cfg.Dir, "aside"))
	if len(des) != 1 || des[0].Name() != "1-2.json" {
		t.Errorf("aside/ = %v, want the newest file only", des)
	}
}

// TestDelete_KeepsWhatItCouldNotRemove: a record whose file a Delete could not remove stays
// queued (to be sent and acknowledged again), and the counts follow the disk.
func TestDelete_KeepsWhatItCouldNotRemove(t *testing.T) {
	t.Parallel()
	cfg := config(t.TempDir())
	q, _ := mustOpen(t, cfg)
	mustPut(t, q, "1.json", "2.json", "3.json")
	removes := 0
	errDisk := errors.New("disk error")
	cfg.Fault = func(op spool.Op) error {
		if op == spool.OpRemove {
			removes++
			if removes == 2 {
				return errDisk
			}
		}
		return nil
	}
	q, _ = mustOpen(t, cfg)
	if err := q.Delete("1.json", "2.json", "3.json"); !errors.Is(err, errDisk) {
		t.Fatalf("Delete = %v, want the disk error", err)
	}
	if d := cmp.Diff([]string{"2.json"}, names(q)); d != "" || q.Bytes() != int64(len(content("2.json"))) {
		t.Errorf("after a failed Delete: Entries() (-want +got):\n%s Bytes() %d", d, q.Bytes())
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "2.json")); err != nil {
		t.Errorf("2.json: %v", err)
	}
}
