package boot_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/image"
)

// TestInstall_RejectsStagedFileSwappedAfterVerify is ATTACKS row 21 (TOCTOU, RAUC
// CVE-2020-25860): the update client verified the staged package, and before or while
// Install writes it into the slot an attacker replaces the staged file, with garbage or
// with another package the same keys signed. The fault hook stops Install before each of
// its filesystem changes in turn and swaps the staged file there (by writing over it, and
// by renaming a new file over it). Each time Install either fails, leaving the previous
// image to boot and nothing pending, or installs exactly the verified bytes.
func TestInstall_RejectsStagedFileSwappedAfterVerify(t *testing.T) {
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
			v1 := r.pack(kind, name, "1.0.0", 1)
			r.publish(v1)
			other := r.pack(kind, name, "1.5.0", 1) // genuine, signed, but not what was verified
			r.publish(other)
			v2 := r.pack(kind, name, "2.0.0", 2)
			b2 := r.publish(v2)
			want, err := os.ReadFile(v2.file)
			must(t, err)
			otherBytes, err := os.ReadFile(other.file)
			must(t, err)
			// The same manifest as v2 over another payload: only the hash tells them apart.
			evilBytes := packEvil(t, kind, name, v2)

			device := func() (*boot.Slots, string) {
				dir := t.TempDir()
				s := openSlots(t, r, dir)
				if kind == image.KindApp {
					install(t, s, osImg, r.bundle())
					must(t, s.Commit(image.KindOS))
				}
				install(t, s, v1, r.bundle())
				must(t, s.Commit(kind))
				return s, dir
			}
			var ops []string
			s, _ := device()
			boot.SetFault(s, func(op string) error { ops = append(ops, op); return nil })
			staged := stage(t, want)
			must(t, s.Install(t.Context(), kind, staged, b2, v2.installed()))
			if len(ops) == 0 {
				t.Fatal("Install made no filesystem change the fault hook saw")
			}

			swaps := map[string]func(t *testing.T, staged string){
				"garbage": func(t *testing.T, staged string) {
					must(t, os.WriteFile(staged, bytes.Repeat([]byte{0x42}, len(want)), 0o600))
				},
				"other_signed_package": func(t *testing.T, staged string) {
					must(t, os.WriteFile(staged, otherBytes, 0o600))
				},
				"same_manifest_other_payload": func(t *testing.T, staged string) {
					must(t, os.WriteFile(staged, evilBytes, 0o600))
				},
				"renamed_over": func(t *testing.T, staged string) {
					tmp := staged + ".evil"
					must(t, os.WriteFile(tmp, evilBytes, 0o600))
					must(t, os.Rename(tmp, staged))
				},
			}
			for swapName, swap := range swaps {
				for k, op := range ops {
					t.Run(fmt.Sprintf("%s/%02d_%s", swapName, k, strings.ReplaceAll(op, " ", "_")), func(t *testing.T) {
						s, dir := device()
						staged := stage(t, want)
						n := 0
						boot.SetFault(s, func(string) error {
							if n == k {
								swap(t, staged)
							}
							n++
							return nil
						})
						err := s.Install(t.Context(), kind, staged, b2, v2.installed())
						s = openSlots(t, r, dir) // reboot
						rec := record(t, s)
						st := rec.OS
						if kind == image.KindApp {
							st = rec.App
						}
						if err != nil {
							// Refused: the previous image stays, nothing is pending.
							if !errors.Is(err, boot.ErrHashMismatch) && !errors.Is(err, boot.ErrWrongImage) {
								t.Errorf("Install() with the staged file swapped at %q = %v, want ErrHashMismatch or ErrWrongImage", op, err)
							}
							if st.Pending != "" || st.Images[st.Active].SHA256 != v1.sha {
								t.Errorf("record after a refused install = %+v, want %s active and nothing pending", st, v1.path)
							}
							return
						}
						// Installed: only the verified bytes are in the slot, and they boot.
						if st.Pending == "" || st.Images[st.Pending].SHA256 != v2.sha {
							t.Fatalf("record after Install() = %+v, want %s pending", st, v2.path)
						}
						got, rerr := os.ReadFile(filepath.Join(s.SlotDir(kind, st.Pending), "image.pkg"))
						must(t, rerr)
						if !bytes.Equal(got, want) {
							t.Errorf("slot %s holds other bytes than the verified package after a swap at %q", st.Pending, op)
						}
						if _, err := boot.Verify(r.root, s.SlotDir(kind, st.Pending), kind, v2.installed(), 1<<20); err != nil {
							t.Errorf("Verify(the new slot) after a swap at %q = %v", op, err)
						}
					})
				}
			}
		})
	}
}

// packEvil packs an image package whose manifest is p's and whose entry point is not.
func packEvil(t *testing.T, kind image.Kind, name string, p pkg) []byte {
	t.Helper()
	src := t.TempDir()
	file, exe := image.AppManifestFile, "bin/app"
	manifest := fmt.Sprintf(`{"format":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","name":%q,"kind":"app","version":%q,"security_version":%d,"product":"DW100","app":{"entry_point":"bin/app","capabilities":{}}}`,
		name, p.version, p.sv)
	if kind == image.KindOS {
		file, exe = image.OSManifestFile, boot.OSEntryPoint
		manifest = fmt.Sprintf(`{"format":1,"component_id":"0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f","name":%q,"kind":"os","version":%q,"security_version":%d}`,
			name, p.version, p.sv)
	}
	must(t, os.WriteFile(filepath.Join(src, file), []byte(manifest), 0o600))
	must(t, os.MkdirAll(filepath.Join(src, "bin"), 0o700))
	must(t, os.WriteFile(filepath.Join(src, filepath.FromSlash(exe)), []byte("#!/bin/sh\necho evil\n"), 0o700))
	var buf bytes.Buffer
	_, err := image.Pack(t.Context(), src, &buf)
	must(t, err)
	return buf.Bytes()
}

// stage writes data as the update client's staged download.
func stage(t *testing.T, data []byte) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "staged.pkg")
	must(t, os.WriteFile(name, data, 0o600))
	return name
}
