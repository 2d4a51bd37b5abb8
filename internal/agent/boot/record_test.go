package boot_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/agent/boot"
)

const sha1 = "363582ec709a71ec9193d5f5a2d884bb9c98363e6668b774550c1753d8346129"

// goodRecord is a record with an OS committed in slot a and another on trial in b.
func goodRecord() boot.Record {
	return boot.Record{
		Format: boot.RecordFormat,
		OS: boot.SlotState{Active: boot.SlotA, Pending: boot.SlotB, TriesLeft: 2, Images: map[boot.Slot]boot.Installed{
			boot.SlotA: {Path: "os/moat-os/1.0.0", SHA256: sha1, Version: "1.0.0", SecurityVersion: 1, Metadata: boot.Versions{Root: 1, Targets: 2}},
			boot.SlotB: {Path: "os/moat-os/2.0.0", SHA256: sha1, Version: "2.0.0", SecurityVersion: 2, Metadata: boot.Versions{Root: 1, Targets: 3}},
		}},
		App: boot.SlotState{Bad: map[boot.Slot]boot.Mark{boot.SlotA: {SHA256: sha1, Reason: "crashed"}}, Images: map[boot.Slot]boot.Installed{
			boot.SlotA: {Path: "apps/dw100-app/1.0.0", SHA256: sha1, Version: "1.0.0", Metadata: boot.Versions{Root: 1, Targets: 2, Apps: 1}},
		}},
		Seen: boot.Versions{Root: 1, Targets: 3, Apps: 1},
	}
}

func TestRecord_RoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rec, err := boot.ReadRecord(dir)
	if err != nil || !cmp.Equal(rec, boot.Record{Format: boot.RecordFormat}) {
		t.Fatalf("ReadRecord(no file) = %+v, %v, want the empty record", rec, err)
	}
	want := goodRecord()
	must(t, boot.WriteRecord(dir, want))
	got, err := boot.ReadRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadRecord after WriteRecord (-want +got):\n%s", diff)
	}
	entries, err := os.ReadDir(dir)
	must(t, err)
	if len(entries) != 1 || entries[0].Name() != "boot.json" {
		t.Errorf("state directory holds %v, want only boot.json", entries)
	}
}

func TestParseRecord_Rejects(t *testing.T) {
	t.Parallel()
	good := `{"format":1,"os":{"active":"a","pending":"","tries_left":0,"images":{"a":{"path":"os/moat-os/1.0.0","sha256":"` + sha1 +
		`","version":"1.0.0","security_version":1,"metadata":{"root":1,"targets":2,"apps":0}}}},"app":{"active":"","pending":"","tries_left":0},"seen":{"root":1,"targets":2,"apps":0}}`
	if _, err := boot.ParseRecord([]byte(good)); err != nil {
		t.Fatalf("ParseRecord(good) = %v", err)
	}
	for name, in := range map[string]string{
		"empty":                     ``,
		"not json":                  `garbage`,
		"trailing data":             good + `{}`,
		"unknown field":             strings.Replace(good, `"format":1`, `"format":1,"extra":true`, 1),
		"wrong format":              strings.Replace(good, `"format":1`, `"format":2`, 1),
		"unknown slot":              strings.Replace(good, `"active":"a"`, `"active":"c"`, 1),
		"pending is active":         strings.Replace(good, `"pending":""`, `"pending":"a"`, 1),
		"tries without pending":     strings.Replace(good, `"tries_left":0`, `"tries_left":3`, 1),
		"pending without image":     strings.Replace(good, `"pending":"","tries_left":0`, `"pending":"b","tries_left":1`, 1),
		"active without image":      strings.Replace(good, `"app":{"active":""`, `"app":{"active":"b"`, 1),
		"bad sha256":                strings.Replace(good, sha1, "ABC", 1),
		"path of the wrong kind":    strings.Replace(good, `os/moat-os/1.0.0`, `apps/moat-os/1.0.0`, 1),
		"path with traversal":       strings.Replace(good, `os/moat-os/1.0.0`, `os/../1.0.0`, 1),
		"version differs from path": strings.Replace(good, `"version":"1.0.0"`, `"version":"1.0.1"`, 1),
		"negative seen":             strings.Replace(good, `"seen":{"root":1`, `"seen":{"root":-1`, 1),
		"active marked bad":         strings.Replace(good, `"tries_left":0,"images"`, `"tries_left":0,"bad":{"a":{"sha256":"`+sha1+`","reason":"x"}},"images"`, 1),
		"too large":                 good + strings.Repeat(" ", boot.MaxRecordBytes),
	} {
		if _, err := boot.ParseRecord([]byte(in)); !errors.Is(err, boot.ErrCorruptRecord) {
			t.Errorf("ParseRecord(%s) = %v, want ErrCorruptRecord", name, err)
		}
	}
}

func TestReadRecord_CorruptFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "boot.json"), []byte(`{"format":1,"os":`), 0o600))
	if _, err := boot.ReadRecord(dir); !errors.Is(err, boot.ErrCorruptRecord) {
		t.Errorf("ReadRecord(truncated boot.json) = %v, want ErrCorruptRecord", err)
	}
	if err := boot.WriteRecord(dir, boot.Record{Format: 2}); err == nil {
		t.Error("WriteRecord(invalid record) = nil error")
	}
}
