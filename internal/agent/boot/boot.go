// Package boot is the device's storage and verified-boot layer: two slots (A and B) for the
// OS image and two for the application image, a boot record with a try counter, and the
// launcher that chooses and verifies a slot before anything in it runs (docs/device-boot.md).
//
// Layout under the state directory DIR: DIR/boot.json is the Record;
// DIR/slots/{os,app}-{a,b}/ each hold image.pkg (the package as downloaded), bundle.json (the
// signed TUF metadata it was planned with: Bundle) and root/ (the unpacked payload).
//
// What it trusts: the platform root pinned in the device build, and its own state
// directory's integrity only as far as a power cut can break it. It does not trust the
// contents of a slot: a slot boots only if Verify shows, from the pinned root down, that its
// package is what the offline keys signed at the slot's path and that root/ is exactly that
// package's payload (DESIGN rule 2; attacked by TestLaunch_FallsBack). Expiry is not
// checked (an offline device must still boot); a bundle older than the one the slot was
// installed with is refused (TestLaunch_FallsBack/older_bundle).
//
// What it enforces (DESIGN rule 4): Install writes only to the slot that is neither active
// nor on trial, and names the new slot in the record only after every byte of it is synced
// and verified, so a crash at any step leaves the active slot bootable
// (TestInstall_CrashAtEveryStep); Choose consumes a try before it returns a slot on trial,
// so a new image that never comes up is rolled back after Config.Tries boots
// (TestChoose_TriesExhaustedFallsBack); a slot that fails verification is marked bad and the
// other one is used; a corrupt record is rebuilt from the slots that verify
// (TestLaunch_CorruptRecord). Every transition is one atomic write of boot.json (temporary
// file, fsync, rename, fsync of the directory).
//
// Concurrency: the methods of one Slots serialize on it. One process at a time may use a
// state directory (the launcher, then the agent it starts).
package boot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/atomicfile"
	"github.com/moat-iot/moat/internal/image"
)

// Errors callers branch on with errors.Is.
var (
	// ErrNoImage: no slot of the kind holds an image that verifies; the caller keeps running
	// the image it was installed with at the factory.
	ErrNoImage = errors.New("no verified image")
	// ErrNotSigned: a root, targets.json or apps.json is not signed by a threshold of the
	// keys its delegator names, or the image is not listed in the signed metadata.
	ErrNotSigned = errors.New("not signed by the offline keys")
	// ErrHashMismatch: image.pkg's SHA-256 or length differs from the signed target or from
	// the image the slot was installed with.
	ErrHashMismatch = errors.New("image package hash mismatch")
	// ErrWrongImage: the package is not the image its path and the record name (kind, name,
	// version, security version), or the bundle is for another path.
	ErrWrongImage = errors.New("wrong image in slot")
	// ErrTreeMismatch: the unpacked root/ differs from the package's payload.
	ErrTreeMismatch = errors.New("unpacked image differs from its package")
	// ErrRollback: metadata older than what the device installed before.
	ErrRollback = errors.New("metadata version rollback")
	// ErrMalformedBundle: bundle.json is missing, too large or not a bundle.
	ErrMalformedBundle = errors.New("malformed verification bundle")
	// ErrCorruptRecord: boot.json does not parse or validate.
	ErrCorruptRecord = errors.New("corrupt boot record")
	// ErrPending: an image of the kind is on trial; Commit or Rollback it first.
	ErrPending = errors.New("an image is pending")
	// ErrNoPending: Commit or Rollback without an image on trial.
	ErrNoPending = errors.New("no image is pending")
	// ErrMarkedBad: Install of an image that was marked bad on this device.
	ErrMarkedBad = errors.New("image was marked bad")
)

// Slot names one of the two slots of a kind.
type Slot string

// The slots.
const (
	SlotA Slot = "a"
	SlotB Slot = "b"
)

func (s Slot) valid() bool { return s == SlotA || s == SlotB }

// other is the other slot.
func (s Slot) other() Slot {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

// Names inside the state directory and a slot.
const (
	slotsDir    = "slots"
	packageName = "image.pkg"
	bundleName  = "bundle.json"
	rootName    = "root"
)

// OSEntryPoint is the executable of an OS image, inside its payload: the agent that the
// launcher starts.
const OSEntryPoint = "bin/moat-agent"

// Defaults.
const (
	// DefaultTries is how many boots (OS) or starts (app) a new image gets before it is
	// rolled back if it is never committed.
	DefaultTries = 3
	// DefaultMaxPayloadBytes bounds the unpacked content of an image.
	DefaultMaxPayloadBytes = 2 << 30
)

// Config configures Slots. Every field is required.
type Config struct {
	// StateDir is DIR; it and DIR/slots are created (mode 0700) if missing.
	StateDir string
	// Root is the pinned platform root, 1.root.json.
	Root []byte
	// Tries is the number of boots or app starts a new image gets; DefaultTries.
	Tries int
	// MaxPayloadBytes bounds the unpacked content of one image; DefaultMaxPayloadBytes.
	MaxPayloadBytes int64
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir: required"))
	}
	if len(c.Root) == 0 {
		errs = append(errs, errors.New("root: required"))
	} else if r, err := parseRoot(c.Root); err != nil {
		errs = append(errs, fmt.Errorf("root: %w", err))
	} else if err := r.VerifyDelegate(metadata.ROOT, r); err != nil {
		errs = append(errs, fmt.Errorf("root: not signed by its own root keys: %w", err))
	}
	if c.Tries < 1 || c.Tries > MaxTries {
		errs = append(errs, fmt.Errorf("tries: %d, want 1 to %d", c.Tries, MaxTries))
	}
	if c.MaxPayloadBytes <= 0 {
		errs = append(errs, errors.New("max_payload_bytes: must be positive"))
	}
	return errors.Join(errs...)
}

// Slots are the A/B slots and the boot record of one state directory.
type Slots struct {
	cfg Config
	mu  sync.Mutex
	// fault, when set (by tests), is called before every filesystem change; an error
	// stops the operation there, as a power cut would.
	fault func(op string) error
}

// New validates cfg and returns the Slots of cfg.StateDir.
func New(cfg Config) (*Slots, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("boot config: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, slotsDir), 0o700); err != nil {
		return nil, fmt.Errorf("boot state: %w", err)
	}
	return &Slots{cfg: cfg}, nil
}

// SlotDir is the directory of a slot of kind.
func (s *Slots) SlotDir(kind image.Kind, slot Slot) string {
	return filepath.Join(s.cfg.StateDir, slotsDir, string(kind)+"-"+string(slot))
}

// Record returns the boot record.
func (s *Slots) Record() (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ReadRecord(s.cfg.StateDir)
}

func (s *Slots) op(name string) error {
	if s.fault == nil {
		return nil
	}
	return s.fault(name)
}

func (s *Slots) write(r Record) error { return writeRecord(s.cfg.StateDir, r, s.op) }

func checkKind(kind image.Kind) error {
	if kind != image.KindOS && kind != image.KindApp {
		return fmt.Errorf("image kind %q, want %q or %q", kind, image.KindOS, image.KindApp)
	}
	return nil
}

// Install puts the package pkgFile, planned as in and signed as bundle says, into the
// inactive slot of kind and makes it pending with Config.Tries tries. in gives the path,
// SHA-256, version and security version the update client verified; Install fills in the
// metadata versions.
//
// The steps, in order: forget the slot's old image in the record; empty the slot; copy the
// package in (hashed while copied; a temporary file, fsync, rename); write bundle.json;
// unpack the payload into root/; fsync root/, the slot and the slots directory; verify the
// slot from the pinned root; then one atomic record write names it Pending. Until that
// last write the record names only the active slot, which Install never touches, so a crash
// at any step leaves the device booting its active image, and running Install again
// finishes the job. Installing the image that is already active or pending does nothing.
//
// Install refuses (and the active slot stays as it was): an image of the kind already on
// trial (ErrPending), an image marked bad on this device (ErrMarkedBad), a package that is
// not in (ErrHashMismatch), a bundle that does not verify or is older than one installed
// before (ErrNotSigned, ErrRollback, ...).
func (s *Slots) Install(ctx context.Context, kind image.Kind, pkgFile string, bundle Bundle, in Installed) error {
	if err := checkKind(kind); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	in.Metadata = Versions{}
	if err := in.validate(kind); err != nil {
		return fmt.Errorf("install %s: %w", kind, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := ReadRecord(s.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("install %s: %w", in.Path, err)
	}
	st := rec.state(kind)
	for _, slot := range []Slot{st.Active, st.Pending} {
		if im, ok := st.Images[slot]; slot != "" && ok && im.Path == in.Path && im.SHA256 == in.SHA256 {
			return nil
		}
	}
	if st.Pending != "" {
		return fmt.Errorf("install %s: %w: %s in slot %s", in.Path, ErrPending, st.Images[st.Pending].Path, st.Pending)
	}
	for slot, m := range st.Bad {
		if m.SHA256 == in.SHA256 {
			return fmt.Errorf("install %s: %w in slot %s: %s", in.Path, ErrMarkedBad, slot, m.Reason)
		}
	}
	target := SlotA
	if st.Active != "" {
		target = st.Active.other()
	}
	if err := s.install(ctx, &rec, kind, target, pkgFile, bundle, in); err != nil {
		return fmt.Errorf("install %s into slot %s-%s: %w", in.Path, kind, target, err)
	}
	return nil
}

func (s *Slots) install(ctx context.Context, rec *Record, kind image.Kind, target Slot, pkgFile string, bundle Bundle, in Installed) error {
	st := rec.state(kind)
	dir := s.SlotDir(kind, target)
	bundleJSON, err := encodeBundle(in.Path, bundle)
	if err != nil {
		return err
	}
	_, installed := st.Images[target]
	_, bad := st.Bad[target]
	if installed || bad {
		delete(st.Images, target)
		delete(st.Bad, target)
		if err := s.write(*rec); err != nil {
			return err
		}
	}
	if err := s.op("remove slot"); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := s.op("create slot"); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := s.copyPackage(pkgFile, dir, in.SHA256); err != nil {
		return err
	}
	if err := atomicfile.WriteHooked(dir, bundleName, bundleJSON, s.op); err != nil {
		return err
	}
	if err := s.unpack(ctx, dir); err != nil {
		return err
	}
	if err := s.op("sync slot"); err != nil {
		return err
	}
	if err := syncTree(filepath.Join(dir, rootName)); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	v, err := Verify(s.cfg.Root, dir, kind, in, s.cfg.MaxPayloadBytes)
	if err != nil {
		return err
	}
	floor := rec.Seen
	if kind == image.KindOS {
		floor.Apps = 0 // an OS bundle carries no apps.json: only root and targets can roll back
	}
	if v.Image.Metadata.below(floor) {
		m := v.Image.Metadata
		return fmt.Errorf("%w: bundle has root %d, targets %d, apps %d; the device has installed %d, %d, %d",
			ErrRollback, m.Root, m.Targets, m.Apps, rec.Seen.Root, rec.Seen.Targets, rec.Seen.Apps)
	}
	if st.Images == nil {
		st.Images = map[Slot]Installed{}
	}
	st.Images[target] = v.Image
	st.Pending, st.TriesLeft = target, s.cfg.Tries
	rec.Seen = rec.Seen.max(v.Image.Metadata)
	return s.write(*rec)
}

// copyPackage copies pkgFile into dir/image.pkg (temporary file, fsync, rename), hashing the
// bytes it writes: the slot keeps only a copy that hashes to sha (ATTACKS row 21: what is
// checked is what was written, whatever happens to pkgFile meanwhile).
func (s *Slots) copyPackage(pkgFile, dir, sha string) (err error) {
	if err := s.op("copy package"); err != nil {
		return err
	}
	src, err := os.Open(pkgFile)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := filepath.Join(dir, packageName+".tmp")
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(dst, h), src)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("%w: %s has SHA-256 %s, planned %s", ErrHashMismatch, pkgFile, got, sha)
	}
	if err := s.op("rename package"); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, packageName))
}

// unpack extracts the slot's own image.pkg into root/.
func (s *Slots) unpack(ctx context.Context, dir string) error {
	if err := s.op("unpack"); err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(dir, packageName))
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := image.Open(f)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWrongImage, err)
	}
	return image.Unpack(ctx, r.Payload(), filepath.Join(dir, rootName), s.cfg.MaxPayloadBytes)
}

// Choose returns the slot of kind to boot (or start) now. A pending slot with tries left is
// returned after its try count is decremented and persisted, so a crash while it runs
// counts; a pending slot without tries left is marked bad and the active one is returned.
// ErrNoImage when neither exists. Choose does not verify: Launch and VerifyApp do.
func (s *Slots) Choose(kind image.Kind) (Slot, error) {
	if err := checkKind(kind); err != nil {
		return "", fmt.Errorf("choose: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := ReadRecord(s.cfg.StateDir)
	if err != nil {
		return "", fmt.Errorf("choose %s: %w", kind, err)
	}
	slot, _, err := s.choose(&rec, kind)
	return slot, err
}

// choose is Choose on rec, which it updates and persists; trial says whether the slot is
// the pending one.
func (s *Slots) choose(rec *Record, kind image.Kind) (slot Slot, trial bool, err error) {
	st := rec.state(kind)
	if st.Pending != "" {
		if st.TriesLeft > 0 {
			st.TriesLeft--
			if err := s.write(*rec); err != nil {
				return "", false, fmt.Errorf("choose %s: %w", kind, err)
			}
			return st.Pending, true, nil
		}
		markBad(st, st.Pending, "boot attempts exhausted")
		if err := s.write(*rec); err != nil {
			return "", false, fmt.Errorf("choose %s: %w", kind, err)
		}
	}
	if st.Active == "" {
		return "", false, fmt.Errorf("choose %s: %w: nothing installed", kind, ErrNoImage)
	}
	return st.Active, false, nil
}

// markBad records slot as bad for reason and takes it out of Active or Pending.
func markBad(st *SlotState, slot Slot, reason string) {
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	if st.Bad == nil {
		st.Bad = map[Slot]Mark{}
	}
	st.Bad[slot] = Mark{SHA256: st.Images[slot].SHA256, Reason: reason}
	if st.Pending == slot {
		st.Pending, st.TriesLeft = "", 0
	}
	if st.Active == slot {
		st.Active = ""
	}
}

// Commit makes the pending image of kind the active one: it passed its health check.
func (s *Slots) Commit(kind image.Kind) error {
	return s.transition(kind, "commit", func(st *SlotState) {
		st.Active, st.Pending, st.TriesLeft = st.Pending, "", 0
	})
}

// Rollback marks the pending image of kind bad for reason (it failed its health check) and
// leaves the active one in place.
func (s *Slots) Rollback(kind image.Kind, reason string) error {
	return s.transition(kind, "roll back", func(st *SlotState) { markBad(st, st.Pending, reason) })
}

func (s *Slots) transition(kind image.Kind, what string, change func(*SlotState)) error {
	if err := checkKind(kind); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := ReadRecord(s.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, kind, err)
	}
	st := rec.state(kind)
	if st.Pending == "" {
		return fmt.Errorf("%s %s: %w", what, kind, ErrNoPending)
	}
	change(st)
	if err := s.write(rec); err != nil {
		return fmt.Errorf("%s %s: %w", what, kind, err)
	}
	return nil
}
