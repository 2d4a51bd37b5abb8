package boot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moat-iot/moat/internal/atomicfile"
	"github.com/moat-iot/moat/internal/image"
)

// RecordFormat is the format of boot.json this code reads and writes.
const RecordFormat = 1

// Limits on the boot record.
const (
	// MaxRecordBytes bounds boot.json.
	MaxRecordBytes = 64 << 10
	// MaxTries bounds Config.Tries and a record's tries_left.
	MaxTries = 100
	// maxReason bounds the reason stored with a bad mark.
	maxReason = 512
	// maxVersion bounds an image version string, as image manifests do.
	maxVersion = 128
)

// recordFile is the boot record's name in the state directory.
const recordFile = "boot.json"

// Record is the boot record, DIR/boot.json: which slot of each kind is active, which one is
// on trial, and what each slot holds. It is replaced atomically on every transition.
type Record struct {
	Format int       `json:"format"`
	OS     SlotState `json:"os"`
	App    SlotState `json:"app"`
	// Seen holds the highest TUF metadata versions of any bundle installed; Install refuses
	// a bundle below them.
	Seen Versions `json:"seen"`
}

// SlotState is the state of the two slots of one kind.
type SlotState struct {
	// Active is the committed slot, "" before the first commit.
	Active Slot `json:"active"`
	// Pending is the slot on trial, "" if none.
	Pending Slot `json:"pending"`
	// TriesLeft is how many more boots (or app starts) Pending gets before it is marked bad.
	TriesLeft int `json:"tries_left"`
	// Bad holds the slots marked bad and why; a bad slot is never chosen again.
	Bad map[Slot]Mark `json:"bad,omitempty"`
	// Images describes what each installed slot holds; Verify checks the slot against it.
	Images map[Slot]Installed `json:"images,omitempty"`
}

// Mark says why a slot's image was marked bad.
type Mark struct {
	SHA256 string `json:"sha256"`
	Reason string `json:"reason"`
}

// Installed describes the image in a slot, as the update client planned it and Install
// verified it.
type Installed struct {
	// Path is the TUF target path: os/<name>/<version> or apps/<name>/<version>.
	Path string `json:"path"`
	// SHA256 is the lower-case hex SHA-256 of image.pkg.
	SHA256          string `json:"sha256"`
	Version         string `json:"version"`
	SecurityVersion uint32 `json:"security_version"`
	// Metadata holds the versions of the metadata in the slot's bundle when it was
	// installed; Verify refuses a bundle below them (a rollback of the bundle).
	Metadata Versions `json:"metadata"`
}

// Versions are TUF metadata versions: the last root of the chain, targets.json and
// apps.json (0 for an OS bundle, which needs no apps.json).
type Versions struct {
	Root    int64 `json:"root"`
	Targets int64 `json:"targets"`
	Apps    int64 `json:"apps"`
}

// below reports whether any version of v is below the same one of floor.
func (v Versions) below(floor Versions) bool {
	return v.Root < floor.Root || v.Targets < floor.Targets || v.Apps < floor.Apps
}

// max is the version-wise maximum of v and o.
func (v Versions) max(o Versions) Versions {
	return Versions{Root: max(v.Root, o.Root), Targets: max(v.Targets, o.Targets), Apps: max(v.Apps, o.Apps)}
}

// state returns the slot state of kind.
func (r *Record) state(kind image.Kind) *SlotState {
	if kind == image.KindOS {
		return &r.OS
	}
	return &r.App
}

// ParseRecord decodes and validates boot.json. It is strict: unknown fields, trailing data,
// more than MaxRecordBytes and any invalid field are errors wrapping ErrCorruptRecord.
func ParseRecord(b []byte) (Record, error) {
	if len(b) > MaxRecordBytes {
		return Record{}, fmt.Errorf("%w: more than %d bytes", ErrCorruptRecord, MaxRecordBytes)
	}
	var r Record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrCorruptRecord, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Record{}, fmt.Errorf("%w: trailing data", ErrCorruptRecord)
	}
	r.normalize()
	if err := r.Validate(); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrCorruptRecord, err)
	}
	return r, nil
}

// normalize drops empty maps, so that a record has one encoding.
func (r *Record) normalize() {
	for _, st := range []*SlotState{&r.OS, &r.App} {
		if len(st.Bad) == 0 {
			st.Bad = nil
		}
		if len(st.Images) == 0 {
			st.Images = nil
		}
	}
}

// Validate reports every problem with r, joined.
func (r Record) Validate() error {
	var errs []error
	if r.Format != RecordFormat {
		errs = append(errs, fmt.Errorf("format: %d, want %d", r.Format, RecordFormat))
	}
	errs = append(errs, r.OS.validate("os", image.KindOS), r.App.validate("app", image.KindApp))
	if r.Seen.Root < 0 || r.Seen.Targets < 0 || r.Seen.Apps < 0 {
		errs = append(errs, errors.New("seen: negative version"))
	}
	return errors.Join(errs...)
}

func (st SlotState) validate(field string, kind image.Kind) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(field+"."+format, args...))
	}
	if st.Active != "" && !st.Active.valid() {
		bad("active: %q is not a slot", st.Active)
	}
	if st.Pending != "" && !st.Pending.valid() {
		bad("pending: %q is not a slot", st.Pending)
	}
	switch {
	case st.Pending != "" && st.Pending == st.Active:
		bad("pending: the active slot %q", st.Pending)
	case st.Pending == "" && st.TriesLeft != 0:
		bad("tries_left: %d without a pending slot", st.TriesLeft)
	case st.TriesLeft < 0 || st.TriesLeft > MaxTries:
		bad("tries_left: %d, want 0 to %d", st.TriesLeft, MaxTries)
	}
	for _, s := range []Slot{st.Active, st.Pending} {
		if s == "" {
			continue
		}
		if _, ok := st.Images[s]; !ok {
			bad("images: no image for slot %q", s)
		}
		if _, ok := st.Bad[s]; ok {
			bad("bad: slot %q is active or pending", s)
		}
	}
	for s, m := range st.Bad {
		if !s.valid() {
			bad("bad: %q is not a slot", s)
		}
		if !validSHA256(m.SHA256) {
			bad("bad[%s].sha256: not 64 lower-case hex digits", s)
		}
		if len(m.Reason) > maxReason {
			bad("bad[%s].reason: more than %d bytes", s, maxReason)
		}
	}
	for s, im := range st.Images {
		if !s.valid() {
			bad("images: %q is not a slot", s)
		}
		if err := im.validate(kind); err != nil {
			bad("images[%s]: %w", s, err)
		}
	}
	return errors.Join(errs...)
}

// validate checks an installed image's description for an image of kind.
func (im Installed) validate(kind image.Kind) error {
	var errs []error
	if _, version, err := splitPath(im.Path, kind); err != nil {
		errs = append(errs, err)
	} else if im.Version != version {
		errs = append(errs, fmt.Errorf("version: %q, the path names %q", im.Version, version))
	}
	if !validSHA256(im.SHA256) {
		errs = append(errs, errors.New("sha256: not 64 lower-case hex digits"))
	}
	if im.Metadata.Root < 0 || im.Metadata.Targets < 0 || im.Metadata.Apps < 0 {
		errs = append(errs, errors.New("metadata: negative version"))
	}
	return errors.Join(errs...)
}

// splitPath returns the name and version of a target path of kind: os/<name>/<version> or
// apps/<name>/<version>, each segment non-empty and without "/".
func splitPath(p string, kind image.Kind) (name, version string, err error) {
	prefix := pathPrefix(kind)
	rest, ok := strings.CutPrefix(p, prefix)
	name, version, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || name == "" || version == "" || strings.Contains(version, "/") || len(version) > maxVersion ||
		name == "." || name == ".." || version == "." || version == ".." {
		return "", "", fmt.Errorf("path: %q is not %s<name>/<version>", p, prefix)
	}
	return name, version, nil
}

// pathPrefix is the target path prefix of images of kind.
func pathPrefix(kind image.Kind) string {
	if kind == image.KindOS {
		return "os/"
	}
	return "apps/"
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ReadRecord reads DIR/boot.json. A missing file is the empty record (nothing installed);
// a file that does not parse or validate is an error wrapping ErrCorruptRecord.
func ReadRecord(dir string) (Record, error) {
	f, err := os.Open(filepath.Join(dir, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Record{Format: RecordFormat}, nil
	}
	if err != nil {
		return Record{}, fmt.Errorf("read boot record: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxRecordBytes+1))
	if err != nil {
		return Record{}, fmt.Errorf("read boot record: %w", err)
	}
	r, err := ParseRecord(b)
	if err != nil {
		return Record{}, fmt.Errorf("read boot record: %w", err)
	}
	return r, nil
}

// WriteRecord validates r and replaces DIR/boot.json with it atomically.
func WriteRecord(dir string, r Record) error {
	return writeRecord(dir, r, nil)
}

func writeRecord(dir string, r Record, op func(string) error) error {
	r.normalize()
	if err := r.Validate(); err != nil {
		return fmt.Errorf("write boot record: %w", err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("write boot record: %w", err)
	}
	return atomicfile.WriteHooked(dir, recordFile, append(b, '\n'), op)
}
