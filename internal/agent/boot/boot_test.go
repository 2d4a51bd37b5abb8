package boot_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/image"
)

// TestInstall_CommitAndRollback walks the life of OS images through the slots: the first
// install is on trial in slot a, a commit makes it active, the next install goes to slot b,
// a rollback keeps a and marks b bad, and a bad image is never installed again.
func TestInstall_CommitAndRollback(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	s := newSlots(t, r)
	v1 := r.pack(image.KindOS, "moat-os", "1.0.0", 1)
	install(t, s, v1, r.publish(v1))

	d := launch(t, s)
	if d.OS.Slot != boot.SlotA || !d.OS.Trial || d.OS.Image.Path != v1.path {
		t.Fatalf("Launch() after the first install = %+v, want slot a on trial with %s", d.OS, v1.path)
	}
	if want := filepath.Join(s.SlotDir(image.KindOS, boot.SlotA), "root", "bin", "moat-agent"); d.OS.Path != want {
		t.Errorf("Launch().OS.Path = %s, want %s", d.OS.Path, want)
	}
	if !errors.Is(d.AppErr, boot.ErrNoImage) || d.App.Slot != "" {
		t.Errorf("Launch() without an app = %+v, %v, want ErrNoImage", d.App, d.AppErr)
	}
	must(t, s.Commit(image.KindOS))
	if d := launch(t, s); d.OS.Slot != boot.SlotA || d.OS.Trial {
		t.Fatalf("Launch() after Commit = %+v, want slot a, committed", d.OS)
	}

	v2 := r.pack(image.KindOS, "moat-os", "2.0.0", 2)
	install(t, s, v2, r.publish(v2))
	if d := launch(t, s); d.OS.Slot != boot.SlotB || !d.OS.Trial || d.OS.Image.Version != "2.0.0" {
		t.Fatalf("Launch() after installing 2.0.0 = %+v, want slot b on trial", d.OS)
	}
	if err := s.Install(t.Context(), image.KindOS, v2.file, r.bundle(), v2.installed()); err != nil {
		t.Errorf("Install of the pending image again = %v, want nil (nothing to do)", err)
	}
	must(t, s.Rollback(image.KindOS, "never attested"))
	if d := launch(t, s); d.OS.Slot != boot.SlotA || d.OS.Trial || d.OS.Image.Version != "1.0.0" {
		t.Fatalf("Launch() after Rollback = %+v, want slot a with 1.0.0", d.OS)
	}
	rec := record(t, s)
	if m := rec.OS.Bad[boot.SlotB]; m.SHA256 != v2.sha || m.Reason != "never attested" || rec.OS.Pending != "" {
		t.Errorf("record after Rollback = %+v, want slot b marked bad with %s", rec.OS, v2.sha)
	}
	if err := s.Install(t.Context(), image.KindOS, v2.file, r.bundle(), v2.installed()); !errors.Is(err, boot.ErrMarkedBad) {
		t.Errorf("Install of the rolled-back image = %v, want ErrMarkedBad", err)
	}

	v3 := r.pack(image.KindOS, "moat-os", "3.0.0", 2)
	install(t, s, v3, r.publish(v3))
	v4 := r.pack(image.KindOS, "moat-os", "4.0.0", 2)
	if err := s.Install(t.Context(), image.KindOS, v4.file, r.publish(v4), v4.installed()); !errors.Is(err, boot.ErrPending) {
		t.Errorf("Install while 3.0.0 is pending = %v, want ErrPending", err)
	}
	if d := launch(t, s); d.OS.Slot != boot.SlotB || !d.OS.Trial || d.OS.Image.Version != "3.0.0" {
		t.Fatalf("Launch() after installing 3.0.0 = %+v, want slot b on trial", d.OS)
	}
	must(t, s.Commit(image.KindOS))
	rec = record(t, s)
	if rec.OS.Active != boot.SlotB || rec.OS.Bad != nil || rec.OS.Images[boot.SlotA].Version != "1.0.0" {
		t.Errorf("record after committing 3.0.0 = %+v, want b active, a holding 1.0.0, nothing bad", rec.OS)
	}
	if err := s.Install(t.Context(), image.KindOS, v3.file, r.bundle(), v3.installed()); err != nil {
		t.Errorf("Install of the active image = %v, want nil (nothing to do)", err)
	}
	if err := s.Commit(image.KindOS); !errors.Is(err, boot.ErrNoPending) {
		t.Errorf("Commit() without a pending image = %v, want ErrNoPending", err)
	}
	if err := s.Rollback(image.KindOS, "x"); !errors.Is(err, boot.ErrNoPending) {
		t.Errorf("Rollback() without a pending image = %v, want ErrNoPending", err)
	}
}

// TestChoose_TriesExhaustedFallsBack: a new OS that never commits gets Config.Tries boots,
// each counted before it runs, then the previous image boots again (ATTACKS row 25).
func TestChoose_TriesExhaustedFallsBack(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	s := newSlots(t, r)
	v1 := r.pack(image.KindOS, "moat-os", "1.0.0", 1)
	install(t, s, v1, r.publish(v1))
	must(t, s.Commit(image.KindOS))
	v2 := r.pack(image.KindOS, "moat-os", "2.0.0", 1)
	install(t, s, v2, r.publish(v2))

	for left := 2; left >= 0; left-- {
		if d := launch(t, s); d.OS.Slot != boot.SlotB || !d.OS.Trial {
			t.Fatalf("Launch() with %d tries left after it = %+v, want slot b on trial", left, d.OS)
		}
		if got := record(t, s).OS.TriesLeft; got != left {
			t.Errorf("tries_left after a trial boot = %d, want %d", got, left)
		}
	}
	d := launch(t, s)
	if d.OS.Slot != boot.SlotA || d.OS.Trial {
		t.Fatalf("Launch() with no tries left = %+v, want slot a", d.OS)
	}
	rec := record(t, s)
	if rec.OS.Pending != "" || rec.OS.Bad[boot.SlotB].Reason != "boot attempts exhausted" {
		t.Errorf("record after the tries ran out = %+v, want b marked bad", rec.OS)
	}
	if slot, err := s.Choose(image.KindOS); slot != boot.SlotA || err != nil {
		t.Errorf("Choose(os) = %s, %v, want a", slot, err)
	}
}

// TestVerifyApp: the runtime verifies the app slot before every start; a new app that
// crash-loops uses up its tries and the previous one starts again.
func TestVerifyApp(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	s := newSlots(t, r)
	osImg := r.pack(image.KindOS, "moat-os", "1.0.0", 1)
	install(t, s, osImg, r.publish(osImg))
	must(t, s.Commit(image.KindOS))
	a1 := r.pack(image.KindApp, "dw100-app", "1.0.0", 1)
	install(t, s, a1, r.publish(a1))

	d := launch(t, s)
	if d.AppErr != nil || d.App.Slot != boot.SlotA || !d.App.Trial || d.App.Manifest.App.EntryPoint != "bin/app" {
		t.Fatalf("Launch().App = %+v, %v, want slot a on trial", d.App, d.AppErr)
	}
	if want := filepath.Join(s.SlotDir(image.KindApp, boot.SlotA), "root", "bin", "app"); d.App.Path != want {
		t.Errorf("Launch().App.Path = %s, want %s", d.App.Path, want)
	}
	must(t, s.Commit(image.KindApp))

	a2 := r.pack(image.KindApp, "dw100-app", "2.0.0", 1)
	install(t, s, a2, r.publish(a2))
	for range 3 {
		c, _, err := s.VerifyApp()
		if err != nil || c.Slot != boot.SlotB || !c.Trial || c.Image.Version != "2.0.0" {
			t.Fatalf("VerifyApp() = %+v, %v, want 2.0.0 in slot b on trial", c, err)
		}
	}
	c, rej, err := s.VerifyApp()
	if err != nil || c.Slot != boot.SlotA || c.Trial || c.Image.Version != "1.0.0" || len(rej) != 0 {
		t.Fatalf("VerifyApp() after 3 starts of 2.0.0 = %+v, %v, %v, want 1.0.0 in slot a", c, rej, err)
	}
	if m := record(t, s).App.Bad[boot.SlotB]; m.SHA256 != a2.sha {
		t.Errorf("app slot b after its tries ran out: bad mark %+v, want %s", m, a2.sha)
	}
}

// TestLaunch_NothingInstalled: a device fresh from the factory has no slot to boot; the
// caller keeps running the factory image.
func TestLaunch_NothingInstalled(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	d, err := boot.Launch(t.TempDir(), r.root)
	if !errors.Is(err, boot.ErrNoImage) || d.OS.Slot != "" {
		t.Errorf("Launch() with nothing installed = %+v, %v, want ErrNoImage", d, err)
	}
}

func TestNew_RejectsBadConfig(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	for name, cfg := range map[string]boot.Config{
		"no state dir":   {Root: r.root, Tries: 3, MaxPayloadBytes: 1},
		"no root":        {StateDir: t.TempDir(), Tries: 3, MaxPayloadBytes: 1},
		"not a root":     {StateDir: t.TempDir(), Root: r.targets, Tries: 3, MaxPayloadBytes: 1},
		"no tries":       {StateDir: t.TempDir(), Root: r.root, MaxPayloadBytes: 1},
		"no payload cap": {StateDir: t.TempDir(), Root: r.root, Tries: 3},
	} {
		if _, err := boot.New(cfg); err == nil {
			t.Errorf("New(%s) = nil error", name)
		}
	}
}
