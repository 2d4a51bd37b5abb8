package boot_test

import (
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/tuf"
)

// twoSlots is a device with OS 1.0.0 committed in slot a and 2.0.0 on trial in slot b,
// installed with a bundle (targets version 4) newer than the first one that listed 2.0.0
// (version 3, kept in old).
type twoSlots struct {
	r      *repo
	s      *boot.Slots
	v1, v2 pkg
	old    boot.Bundle
}

func newTwoSlots(t *testing.T) twoSlots {
	t.Helper()
	r := newRepo(t)
	s := newSlots(t, r)
	v1 := r.pack(image.KindOS, "moat-os", "1.0.0", 1)
	install(t, s, v1, r.publish(v1))
	must(t, s.Commit(image.KindOS))
	v2 := r.pack(image.KindOS, "moat-os", "2.0.0", 2)
	old := r.publish(v2)
	other := r.pack(image.KindOS, "moat-os-eval", "2.1.0", 2)
	install(t, s, v2, r.publish(other))
	return twoSlots{r: r, s: s, v1: v1, v2: v2, old: old}
}

func (ts twoSlots) slot(slot boot.Slot, name ...string) string {
	return filepath.Join(append([]string{ts.s.SlotDir(image.KindOS, slot)}, name...)...)
}

// writeBundle replaces a slot's bundle.json with b planned at path.
func (ts twoSlots) writeBundle(t *testing.T, slot boot.Slot, path string, b boot.Bundle) {
	t.Helper()
	raw, err := boot.EncodeBundle(path, b)
	must(t, err)
	must(t, os.WriteFile(ts.slot(slot, "bundle.json"), raw, 0o600))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	must(t, err)
	must(t, os.WriteFile(to, b, 0o600))
}

// foreignTargets is targets.json listing what r's lists, signed by a key the root does not
// name for targets.
func foreignTargets(t *testing.T, r *repo) []byte {
	t.Helper()
	b, err := tuf.SignTargets(signer(t, genKey(t)), r.targetsV+1, r.expires, r.os, []*ecdsa.PublicKey{&r.appKey.PublicKey})
	must(t, err)
	return b
}

// TestLaunch_FallsBack attacks verified boot (DESIGN rules 2 and 4; ATTACKS rows 9, 10, 22
// and 24): whatever is wrong with the slot on trial, the launcher refuses it with a clear
// error, marks it bad and boots the good slot.
func TestLaunch_FallsBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, ts twoSlots)
		want   error
	}{
		{"tampered package", func(t *testing.T, ts twoSlots) {
			flipByte(t, ts.slot(boot.SlotB, "image.pkg"))
		}, boot.ErrHashMismatch},
		{"truncated package", func(t *testing.T, ts twoSlots) {
			must(t, os.Truncate(ts.slot(boot.SlotB, "image.pkg"), 100))
		}, boot.ErrHashMismatch},
		{"package of the other slot", func(t *testing.T, ts twoSlots) {
			copyFile(t, ts.slot(boot.SlotA, "image.pkg"), ts.slot(boot.SlotB, "image.pkg"))
		}, boot.ErrHashMismatch},
		{"package and bundle signed for another path", func(t *testing.T, ts twoSlots) {
			copyFile(t, ts.slot(boot.SlotA, "image.pkg"), ts.slot(boot.SlotB, "image.pkg"))
			copyFile(t, ts.slot(boot.SlotA, "bundle.json"), ts.slot(boot.SlotB, "bundle.json"))
		}, boot.ErrWrongImage},
		{"targets signed by another key", func(t *testing.T, ts twoSlots) {
			b := ts.r.bundle()
			b.Targets = foreignTargets(t, ts.r)
			ts.writeBundle(t, boot.SlotB, ts.v2.path, b)
		}, boot.ErrNotSigned},
		{"older bundle", func(t *testing.T, ts twoSlots) {
			ts.writeBundle(t, boot.SlotB, ts.v2.path, ts.old)
		}, boot.ErrRollback},
		{"bundle missing", func(t *testing.T, ts twoSlots) {
			must(t, os.Remove(ts.slot(boot.SlotB, "bundle.json")))
		}, boot.ErrMalformedBundle},
		{"bundle with an unknown field", func(t *testing.T, ts twoSlots) {
			must(t, os.WriteFile(ts.slot(boot.SlotB, "bundle.json"), []byte(`{"format":1,"path":"os/moat-os/2.0.0","roots":[],"targets":"e30=","extra":1}`), 0o600))
		}, boot.ErrMalformedBundle},
		{"tampered executable", func(t *testing.T, ts twoSlots) {
			must(t, os.WriteFile(ts.slot(boot.SlotB, "root", "bin", "moat-agent"), []byte("#!/bin/sh\necho evil\n"), 0o700))
		}, boot.ErrTreeMismatch},
		{"extra file", func(t *testing.T, ts twoSlots) {
			must(t, os.WriteFile(ts.slot(boot.SlotB, "root", "bin", "helper"), []byte("x"), 0o600))
		}, boot.ErrTreeMismatch},
		{"symbolic link for the executable", func(t *testing.T, ts twoSlots) {
			exe := ts.slot(boot.SlotB, "root", "bin", "moat-agent")
			must(t, os.Remove(exe))
			must(t, os.Symlink(ts.slot(boot.SlotA, "root", "bin", "moat-agent"), exe))
		}, boot.ErrTreeMismatch},
		{"executable bit dropped", func(t *testing.T, ts twoSlots) {
			must(t, os.Chmod(ts.slot(boot.SlotB, "root", "bin", "moat-agent"), 0o644))
		}, boot.ErrTreeMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTwoSlots(t)
			tc.tamper(t, ts)
			d := launch(t, ts.s)
			if d.OS.Slot != boot.SlotA || d.OS.Trial || d.OS.Image.SHA256 != ts.v1.sha {
				t.Fatalf("Launch().OS = %+v, want the good slot a", d.OS)
			}
			if len(d.Rejected) != 1 || d.Rejected[0].Slot != boot.SlotB || !errors.Is(d.Rejected[0].Err, tc.want) {
				t.Fatalf("Launch().Rejected = %v, want slot b refused with %v", d.Rejected, tc.want)
			}
			rec := record(t, ts.s)
			if rec.OS.Pending != "" || rec.OS.Active != boot.SlotA || rec.OS.Bad[boot.SlotB].SHA256 != ts.v2.sha {
				t.Errorf("record = %+v, want a active and b marked bad", rec.OS)
			}
			if d := launch(t, ts.s); d.OS.Slot != boot.SlotA || len(d.Rejected) != 0 {
				t.Errorf("second Launch() = %+v, %v, want slot a without refusals", d.OS, d.Rejected)
			}
		})
	}
}

// TestLaunch_ActiveTamperedFallsBack: when the committed image no longer verifies, the
// previous one, still in the other slot, boots and becomes active.
func TestLaunch_ActiveTamperedFallsBack(t *testing.T) {
	t.Parallel()
	ts := newTwoSlots(t)
	must(t, ts.s.Commit(image.KindOS))
	flipByte(t, ts.slot(boot.SlotB, "image.pkg"))
	d := launch(t, ts.s)
	if d.OS.Slot != boot.SlotA || d.OS.Image.Version != "1.0.0" || len(d.Rejected) != 1 || !errors.Is(d.Rejected[0].Err, boot.ErrHashMismatch) {
		t.Fatalf("Launch() = %+v, %v, want slot a after refusing b", d.OS, d.Rejected)
	}
	if rec := record(t, ts.s); rec.OS.Active != boot.SlotA {
		t.Errorf("record active slot = %q, want a", rec.OS.Active)
	}

	// And when neither verifies, nothing boots: the caller keeps the factory image.
	flipByte(t, ts.slot(boot.SlotA, "image.pkg"))
	_, err := ts.s.Launch()
	if !errors.Is(err, boot.ErrNoImage) || !errors.Is(err, boot.ErrHashMismatch) {
		t.Errorf("Launch() with both slots tampered = %v, want ErrNoImage and the reason", err)
	}
}

// TestLaunch_CorruptRecord: a boot.json that does not parse is rebuilt from the slots that
// verify; the newer image gets a trial again, with the older one to fall back to.
func TestLaunch_CorruptRecord(t *testing.T) {
	t.Parallel()
	t.Run("both slots good", func(t *testing.T) {
		t.Parallel()
		ts := newTwoSlots(t)
		must(t, ts.s.Commit(image.KindOS))
		dir := filepath.Dir(filepath.Dir(ts.slot(boot.SlotA)))
		must(t, os.WriteFile(filepath.Join(dir, "boot.json"), []byte(`{"format":1,"os":{"active":"c"`), 0o600))
		if _, err := ts.s.Choose(image.KindOS); !errors.Is(err, boot.ErrCorruptRecord) {
			t.Fatalf("Choose() with a corrupt record = %v, want ErrCorruptRecord", err)
		}
		d := launch(t, ts.s)
		if !d.Recovered || d.OS.Slot != boot.SlotB || !d.OS.Trial || d.OS.Image.Version != "2.0.0" {
			t.Fatalf("Launch() = %+v (recovered %v), want 2.0.0 in slot b on trial", d.OS, d.Recovered)
		}
		rec := record(t, ts.s)
		if rec.OS.Active != boot.SlotA || rec.OS.Pending != boot.SlotB || rec.OS.TriesLeft != 2 || rec.Seen.Targets != 4 {
			t.Errorf("rebuilt record = %+v, want a active, b pending with 2 tries, seen targets 4", rec)
		}
	})
	t.Run("trial slot tampered", func(t *testing.T) {
		t.Parallel()
		ts := newTwoSlots(t)
		flipByte(t, ts.slot(boot.SlotB, "image.pkg"))
		dir := filepath.Dir(filepath.Dir(ts.slot(boot.SlotA)))
		must(t, os.WriteFile(filepath.Join(dir, "boot.json"), []byte("\x00\x01garbage"), 0o600))
		d := launch(t, ts.s)
		if !d.Recovered || d.OS.Slot != boot.SlotA || d.OS.Trial || len(d.Rejected) != 1 || !errors.Is(d.Rejected[0].Err, boot.ErrHashMismatch) {
			t.Fatalf("Launch() = %+v, %v (recovered %v), want slot a after refusing b", d.OS, d.Rejected, d.Recovered)
		}
	})
}

// TestInstall_Refuses: Install never makes pending what would not boot, and a refused
// install leaves the active slot as it was.
func TestInstall_Refuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, r *repo, s *boot.Slots) error
		want error
	}{
		{"package differs from the plan", func(t *testing.T, r *repo, s *boot.Slots) error {
			v2 := r.pack(image.KindOS, "moat-os", "2.0.0", 1)
			in := v2.installed()
			in.SHA256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			return s.Install(t.Context(), image.KindOS, v2.file, r.publish(v2), in)
		}, boot.ErrHashMismatch},
		{"targets signed by another key", func(t *testing.T, r *repo, s *boot.Slots) error {
			v2 := r.pack(image.KindOS, "moat-os", "2.0.0", 1)
			b := r.publish(v2)
			b.Targets = foreignTargets(t, r)
			return s.Install(t.Context(), image.KindOS, v2.file, b, v2.installed())
		}, boot.ErrNotSigned},
		{"image not in the signed metadata", func(t *testing.T, r *repo, s *boot.Slots) error {
			v2 := r.pack(image.KindOS, "moat-os", "2.0.0", 1)
			return s.Install(t.Context(), image.KindOS, v2.file, r.bundle(), v2.installed())
		}, boot.ErrNotSigned},
		{"manifest differs from the signed path", func(t *testing.T, r *repo, s *boot.Slots) error {
			v3 := r.pack(image.KindOS, "moat-os", "3.0.0", 1)
			in := v3.installed()
			in.Path, in.Version = "os/moat-os/2.0.0", "2.0.0"
			return s.Install(t.Context(), image.KindOS, v3.file, r.publishAt(v3, in.Path), in)
		}, boot.ErrWrongImage},
		{"bundle older than one installed", func(t *testing.T, r *repo, s *boot.Slots) error {
			v2 := r.pack(image.KindOS, "moat-os", "2.0.0", 1)
			old := r.publish(v2)
			app := r.pack(image.KindApp, "dw100-app", "1.0.0", 1)
			r.publish(app)
			r.signTargets()
			install(t, s, app, r.bundle())
			return s.Install(t.Context(), image.KindOS, v2.file, old, v2.installed())
		}, boot.ErrRollback},
		{"app bundle without apps.json", func(t *testing.T, r *repo, s *boot.Slots) error {
			app := r.pack(image.KindApp, "dw100-app", "1.0.0", 1)
			r.publish(app)
			b := r.bundle()
			b.Apps = nil
			return s.Install(t.Context(), image.KindApp, app.file, b, app.installed())
		}, boot.ErrNotSigned},
		{"apps signed by the OS key", func(t *testing.T, r *repo, s *boot.Slots) error {
			app := r.pack(image.KindApp, "dw100-app", "1.0.0", 1)
			b := r.publish(app)
			var err error
			b.Apps, err = tuf.SignApps(signer(t, r.osKey), r.appsV+1, r.expires, r.apps)
			must(t, err)
			return s.Install(t.Context(), image.KindApp, app.file, b, app.installed())
		}, boot.ErrNotSigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t)
			s := newSlots(t, r)
			v1 := r.pack(image.KindOS, "moat-os", "1.0.0", 1)
			install(t, s, v1, r.publish(v1))
			must(t, s.Commit(image.KindOS))
			if err := tc.run(t, r, s); !errors.Is(err, tc.want) {
				t.Fatalf("Install() = %v, want %v", err, tc.want)
			}
			d := launch(t, s)
			if d.OS.Slot != boot.SlotA || d.OS.Trial || len(d.Rejected) != 0 {
				t.Errorf("Launch() after the refused install = %+v, %v, want slot a", d.OS, d.Rejected)
			}
			if rec := record(t, s); rec.OS.Pending != "" {
				t.Errorf("record after the refused install: pending %q", rec.OS.Pending)
			}
		})
	}
}

// TestVerify_IgnoresExpiry: a device boots offline long after its metadata expired.
func TestVerify_IgnoresExpiry(t *testing.T) {
	t.Parallel()
	r := newRepoExpiring(t, time.Now().Add(-365*24*time.Hour))
	s := newSlots(t, r)
	v1 := r.pack(image.KindOS, "moat-os", "1.0.0", 1)
	install(t, s, v1, r.publish(v1))
	if d := launch(t, s); d.OS.Slot != boot.SlotA {
		t.Errorf("Launch() with expired metadata = %+v, want slot a", d.OS)
	}
}

// TestVerify_RootChain: the bundle's roots must chain from the pinned root one version at
// a time, each signed by the previous root's keys and its own (ATTACKS row 15).
func TestVerify_RootChain(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	r.rotateRoot()
	r.rotateRoot()
	v1 := r.pack(image.KindOS, "moat-os", "1.0.0", 1)
	good := r.publish(v1)
	s := newSlots(t, r)
	install(t, s, v1, good)
	d := launch(t, s)
	if d.OS.Image.Metadata.Root != 3 {
		t.Errorf("Launch().OS.Image.Metadata = %+v, want root version 3", d.OS.Image.Metadata)
	}

	verify := func(b boot.Bundle, want ...boot.Installed) error {
		raw, err := boot.EncodeBundle(v1.path, b)
		must(t, err)
		_, _, _, _, err = boot.VerifyBundle(r.root, raw, image.KindOS, append(want, boot.Installed{})[0])
		return err
	}
	if err := verify(good); err != nil {
		t.Fatalf("VerifyBundle(good chain) = %v", err)
	}
	skip := good
	skip.Roots = good.Roots[1:]
	if err := verify(skip); !errors.Is(err, boot.ErrNotSigned) {
		t.Errorf("VerifyBundle(chain without version 2) = %v, want ErrNotSigned", err)
	}
	short := good
	short.Roots = good.Roots[:1]
	if err := verify(short, d.OS.Image); !errors.Is(err, boot.ErrRollback) {
		t.Errorf("VerifyBundle(chain without version 3) for a slot installed with root 3 = %v, want ErrRollback", err)
	}
	// A third root signed only by a key the second root does not name.
	forged, err := tuf.SignRoot([]signature.Signer{signer(t, r.rootKey)}, 3, r.expires, tuf.RootKeys{
		Root: []*ecdsa.PublicKey{&r.rootKey.PublicKey}, RootThreshold: 1, OS: &r.osKey.PublicKey, Online: &r.online.PublicKey,
	})
	must(t, err)
	bad := good
	bad.Roots = [][]byte{good.Roots[0], forged}
	if err := verify(bad); !errors.Is(err, boot.ErrNotSigned) {
		t.Errorf("VerifyBundle(root 3 without root 2's signature) = %v, want ErrNotSigned", err)
	}
}
