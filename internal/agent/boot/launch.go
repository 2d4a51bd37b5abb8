package boot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/mod/semver"

	"github.com/moat-iot/moat/internal/image"
)

// Choice is a slot chosen and verified to run.
type Choice struct {
	Slot Slot
	// Path is the executable: root/bin/moat-agent (OSEntryPoint) for the OS, root/<entry
	// point of the app manifest> for an app.
	Path string
	// Root is the slot's unpacked payload, root/.
	Root     string
	Image    Installed
	Manifest image.Manifest
	// Trial says the image is pending: Commit it once it is healthy, Rollback it if not.
	Trial bool
}

// Rejection is a slot that was refused and marked bad, and why.
type Rejection struct {
	Kind image.Kind
	Slot Slot
	Err  error
}

// Decision is what the launcher runs.
type Decision struct {
	// OS is the OS slot to execute: OS.Path with OS.Slot.
	OS Choice
	// App is the app slot to start first, zero with AppErr set when no app slot verifies
	// (ErrNoImage, also when none is installed). Call VerifyApp before every later start.
	App    Choice
	AppErr error
	// Rejected lists the slots refused on this boot, for the error report.
	Rejected []Rejection
	// Recovered says boot.json was corrupt and was rebuilt from the slots that verify.
	Recovered bool
}

// Launch is the launcher: with the defaults, it chooses and verifies the OS slot and the app
// slot of stateDir against the pinned root. See Slots.Launch.
func Launch(stateDir string, pinnedRoot []byte) (Decision, error) {
	s, err := New(Config{StateDir: stateDir, Root: pinnedRoot, Tries: DefaultTries, MaxPayloadBytes: DefaultMaxPayloadBytes})
	if err != nil {
		return Decision{}, err
	}
	return s.Launch()
}

// Launch chooses the OS slot (Choose: a pending slot uses up a try), verifies it (Verify,
// and the entry point bin/moat-agent must be an executable file), and when that fails marks
// it bad and falls back to the other slot, verified the same way. It does the same for the
// app slot, whose failure is reported in Decision.AppErr. The error is ErrNoImage, joined
// with every slot's reason, when no OS slot verifies: the caller then keeps running the
// image it was installed with at the factory. A corrupt boot.json is rebuilt first from the
// slots that verify: the older image active, a newer one pending with Config.Tries tries.
func (s *Slots) Launch() (Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d Decision
	rec, err := s.load(&d)
	if err != nil {
		return d, err
	}
	var rej []Rejection
	d.OS, rej, err = s.launch(&rec, image.KindOS)
	d.Rejected = append(d.Rejected, rej...)
	if err != nil {
		return d, err
	}
	d.App, rej, d.AppErr = s.launch(&rec, image.KindApp)
	d.Rejected = append(d.Rejected, rej...)
	return d, nil
}

// VerifyApp is what the runtime calls before each start of the application: it chooses the
// app slot (a pending one uses up a try, so a crash-looping new app is rolled back after
// Config.Tries starts), verifies it, and falls back to the other slot as Launch does. It
// returns the slots it refused, and ErrNoImage when none verifies.
func (s *Slots) VerifyApp() (Choice, []Rejection, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d Decision
	rec, err := s.load(&d)
	if err != nil {
		return Choice{}, d.Rejected, err
	}
	c, rej, err := s.launch(&rec, image.KindApp)
	return c, append(d.Rejected, rej...), err
}

// load reads the record; a corrupt one is rebuilt (noted in d).
func (s *Slots) load(d *Decision) (Record, error) {
	rec, err := ReadRecord(s.cfg.StateDir)
	if !errors.Is(err, ErrCorruptRecord) {
		return rec, err
	}
	d.Recovered = true
	rec, d.Rejected, err = s.rebuild()
	return rec, err
}

// launch chooses, verifies and if need be falls back, for one kind, persisting every change
// to rec.
func (s *Slots) launch(rec *Record, kind image.Kind) (Choice, []Rejection, error) {
	slot, trial, err := s.choose(rec, kind)
	if err != nil {
		return Choice{}, nil, err
	}
	var rejected []Rejection
	for {
		c, verr := s.verifySlot(rec, kind, slot)
		if verr == nil {
			c.Trial = trial
			return c, rejected, nil
		}
		rejected = append(rejected, Rejection{Kind: kind, Slot: slot, Err: verr})
		st := rec.state(kind)
		markBad(st, slot, verr.Error())
		// After a failed trial, the active slot; after a failed active slot, the other one
		// if it holds an image not marked bad, which becomes the active one.
		next := st.Active
		if o := slot.other(); next == "" && !trial {
			if _, ok := st.Images[o]; ok {
				if _, bad := st.Bad[o]; !bad {
					next, st.Active = o, o
				}
			}
		}
		if err := s.write(*rec); err != nil {
			return Choice{}, rejected, fmt.Errorf("launch %s: %w", kind, err)
		}
		if next == "" {
			errs := []error{fmt.Errorf("launch %s: %w: every slot refused", kind, ErrNoImage)}
			for _, r := range rejected {
				errs = append(errs, fmt.Errorf("slot %s-%s: %w", kind, r.Slot, r.Err))
			}
			return Choice{}, rejected, errors.Join(errs...)
		}
		slot, trial = next, false
	}
}

// verifySlot verifies a slot against its record entry and finds its entry point.
func (s *Slots) verifySlot(rec *Record, kind image.Kind, slot Slot) (Choice, error) {
	want, ok := rec.state(kind).Images[slot]
	if !ok {
		return Choice{}, fmt.Errorf("%w: the record names no image in the slot", ErrNoImage)
	}
	dir := s.SlotDir(kind, slot)
	v, err := Verify(s.cfg.Root, dir, kind, want, s.cfg.MaxPayloadBytes)
	if err != nil {
		return Choice{}, err
	}
	entry := OSEntryPoint
	if kind == image.KindApp {
		if v.Manifest.App == nil {
			return Choice{}, fmt.Errorf("%w: app manifest without an app section", ErrWrongImage)
		}
		entry = v.Manifest.App.EntryPoint
	}
	root := filepath.Join(dir, rootName)
	p := filepath.Join(root, filepath.FromSlash(entry))
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return Choice{}, fmt.Errorf("%w: entry point %s is not an executable file in the image", ErrWrongImage, entry)
	}
	return Choice{Slot: slot, Path: p, Root: root, Image: v.Image, Manifest: v.Manifest}, nil
}

// rebuild makes a new record from the slots that verify, when boot.json is corrupt. With no
// record to say which slot was committed, the older of two good images becomes active and
// the newer one pending with Config.Tries tries: if it was committed it will be again after
// its health check, and if it was the image on trial, it is still on trial.
func (s *Slots) rebuild() (Record, []Rejection, error) {
	rec := Record{Format: RecordFormat}
	var rejected []Rejection
	for _, kind := range []image.Kind{image.KindOS, image.KindApp} {
		st := rec.state(kind)
		var good []Slot
		for _, slot := range []Slot{SlotA, SlotB} {
			dir := s.SlotDir(kind, slot)
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				continue
			}
			v, err := Verify(s.cfg.Root, dir, kind, Installed{}, s.cfg.MaxPayloadBytes)
			if err != nil {
				rejected = append(rejected, Rejection{Kind: kind, Slot: slot, Err: err})
				continue
			}
			if st.Images == nil {
				st.Images = map[Slot]Installed{}
			}
			st.Images[slot] = v.Image
			rec.Seen = rec.Seen.max(v.Image.Metadata)
			good = append(good, slot)
		}
		switch {
		case len(good) == 1:
			st.Active = good[0]
		case len(good) == 2:
			a, b := st.Images[SlotA], st.Images[SlotB]
			switch {
			case newer(kind, b, a):
				st.Active, st.Pending, st.TriesLeft = SlotA, SlotB, s.cfg.Tries
			case newer(kind, a, b):
				st.Active, st.Pending, st.TriesLeft = SlotB, SlotA, s.cfg.Tries
			default: // the same image twice
				st.Active = SlotA
			}
		}
	}
	if err := s.write(rec); err != nil {
		return Record{}, rejected, fmt.Errorf("rebuild boot record: %w", err)
	}
	return rec, rejected, nil
}

// newer reports whether x is a later install than y: later metadata of the role that signs
// the kind, then a later root, then a higher security version, then a higher version.
func newer(kind image.Kind, x, y Installed) bool {
	kx, ky := x.Metadata.Targets, y.Metadata.Targets
	if kind == image.KindApp {
		kx, ky = x.Metadata.Apps, y.Metadata.Apps
	}
	switch {
	case kx != ky:
		return kx > ky
	case x.Metadata.Root != y.Metadata.Root:
		return x.Metadata.Root > y.Metadata.Root
	case x.SecurityVersion != y.SecurityVersion:
		return x.SecurityVersion > y.SecurityVersion
	}
	return semver.Compare("v"+x.Version, "v"+y.Version) > 0
}

// LaunchOS is Launch for the OS slot alone: what `moat boot` does before it executes the
// OS's agent, which then verifies the app itself before every start (VerifyApp), so that a
// trial app's tries are not used up twice per boot.
func (s *Slots) LaunchOS() (Choice, []Rejection, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d Decision
	rec, err := s.load(&d)
	if err != nil {
		return Choice{}, d.Rejected, err
	}
	c, rej, err := s.launch(&rec, image.KindOS)
	return c, append(d.Rejected, rej...), err
}

// Running returns the verified choice of a slot the launcher already chose, without
// changing the record: the agent that `moat boot` started learns what it booted. It is
// ErrNoImage when the record names no image there.
func (s *Slots) Running(kind image.Kind, slot Slot) (Choice, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := ReadRecord(s.cfg.StateDir)
	if err != nil {
		return Choice{}, err
	}
	c, err := s.verifySlot(&rec, kind, slot)
	if err != nil {
		return Choice{}, err
	}
	c.Trial = rec.state(kind).Pending == slot
	return c, nil
}
