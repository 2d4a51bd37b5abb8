package boot_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/image"
)

var errPowerCut = errors.New("power cut")

// TestInstall_CrashAtEveryStep is the power-cut test of an update (DESIGN rule 4; ATTACKS
// row 24): Install is stopped before each of its N filesystem changes in turn (k = 0..N-1);
// after the "reboot" the device boots its previous image (or, once the record naming the
// new one is renamed into place, the new one on trial), and running Install again finishes
// the update.
//
// A stop returns early instead of killing the process, so the deferred removal of a
// temporary file still runs where a real power cut would leave it behind; no invariant
// rests on those files, and the next Install empties the slot.
func TestInstall_CrashAtEveryStep(t *testing.T) {
	t.Parallel()
	for _, kind := range []image.Kind{image.KindOS, image.KindApp} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			r := newRepo(t)
			name := "moat-os"
			if kind == image.KindApp {
				name = "dw100-app"
			}
			osImg := r.pack(image.KindOS, "moat-os", "0.9.0", 1)
			r.publish(osImg)
			v0, v1, v2 := r.pack(kind, name, "1.0.0", 1), r.pack(kind, name, "1.1.0", 1), r.pack(kind, name, "2.0.0", 2)
			r.publish(v0)
			r.publish(v1)
			b2 := r.publish(v2)

			// The device: v0 was active in slot a, then v1 in slot b; v2 goes to slot a.
			device := func() (*boot.Slots, string) {
				dir := t.TempDir()
				s := openSlots(t, r, dir)
				if kind == image.KindApp {
					install(t, s, osImg, r.bundle())
					must(t, s.Commit(image.KindOS))
				}
				for _, p := range []pkg{v0, v1} {
					install(t, s, p, r.bundle())
					must(t, s.Commit(kind))
				}
				return s, dir
			}
			// start chooses and verifies the slot the device runs for kind.
			start := func(s *boot.Slots) (boot.Choice, error) {
				if kind == image.KindApp {
					c, _, err := s.VerifyApp()
					return c, err
				}
				d, err := s.Launch()
				return d.OS, err
			}

			var ops []string
			s, _ := device()
			boot.SetFault(s, func(op string) error { ops = append(ops, op); return nil })
			install(t, s, v2, b2)
			committed := -1 // the index of the rename that names the new slot in the record
			for i, op := range ops {
				if op == "rename boot.json" {
					committed = i
				}
			}
			if len(ops) < 10 || committed != len(ops)-2 {
				t.Fatalf("Install's filesystem changes = %q, want the record's rename second to last", ops)
			}

			for k := range ops {
				t.Run(fmt.Sprintf("%02d_%s", k, strings.ReplaceAll(ops[k], " ", "_")), func(t *testing.T) {
					s, dir := device()
					n := 0
					boot.SetFault(s, func(string) error {
						if n == k {
							return errPowerCut
						}
						n++
						return nil
					})
					if err := s.Install(t.Context(), kind, v2.file, b2, v2.installed()); !errors.Is(err, errPowerCut) {
						t.Fatalf("Install() stopped at %q = %v, want the power cut", ops[k], err)
					}

					s = openSlots(t, r, dir) // reboot
					c, err := start(s)
					switch {
					case err != nil:
						t.Fatalf("boot after a power cut at %q = %v", ops[k], err)
					case k <= committed && (c.Slot != boot.SlotB || c.Trial || c.Image.SHA256 != v1.sha):
						t.Fatalf("boot after a power cut at %q = %+v, want the previous image in slot b", ops[k], c)
					case k > committed && (c.Slot != boot.SlotA || !c.Trial || c.Image.SHA256 != v2.sha):
						t.Fatalf("boot after a power cut at %q = %+v, want the new image in slot a on trial", ops[k], c)
					}

					install(t, s, v2, b2)
					c, err = start(s)
					if err != nil || c.Slot != boot.SlotA || !c.Trial || c.Image.SHA256 != v2.sha {
						t.Fatalf("boot after Install ran again = %+v, %v, want the new image in slot a on trial", c, err)
					}
					must(t, s.Commit(kind))
					rec := record(t, s)
					st := rec.OS
					if kind == image.KindApp {
						st = rec.App
					}
					if st.Active != boot.SlotA || st.Pending != "" || len(st.Bad) != 0 {
						t.Errorf("record after the commit = %+v, want slot a active", st)
					}
				})
			}
		})
	}
}
