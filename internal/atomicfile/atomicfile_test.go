package atomicfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/atomicfile"
)

// TestWriteHooked_CrashAtAnyStepLeavesOldOrNew: a write stopped before any of its steps
// leaves the old content whole and no temporary file behind; only a write stopped after
// the rename (before the directory sync) shows the new one.
func TestWriteHooked_CrashAtAnyStepLeavesOldOrNew(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"create", "write", "rename", "sync dir of"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := atomicfile.Write(dir, "state", []byte("old")); err != nil {
				t.Fatal(err)
			}
			crash := errors.New("crash")
			err := atomicfile.WriteHooked(dir, "state", []byte("new"), func(op string) error {
				if strings.HasPrefix(op, step+" ") {
					return crash
				}
				return nil
			})
			if !errors.Is(err, crash) {
				t.Fatalf("WriteHooked = %v, want the crash", err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "state"))
			if err != nil {
				t.Fatal(err)
			}
			want := "old"
			if step == "sync dir of" {
				want = "new" // renamed already
			}
			if string(got) != want {
				t.Errorf("after a crash before %q: %q, want %q", step, got, want)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("after a crash before %q: %d files, want 1 (no temporary file left)", step, len(entries))
			}
		})
	}
}

// TestWrite_Mode0600: state files are the device's alone.
func TestWrite_Mode0600(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := atomicfile.Write(dir, "key", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
}
