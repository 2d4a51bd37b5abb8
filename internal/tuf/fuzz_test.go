package tuf

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// appNameRE is what an accepted apps target path must look like: apps/{component}/{version}
// with segments of [A-Za-z0-9._+~-], none "." or "..".
var appNameRE = regexp.MustCompile(`^apps/[A-Za-z0-9._+~-]{1,128}/[A-Za-z0-9._+~-]{1,128}$`)

// FuzzPutApps: PutApps never panics; it accepts a correctly signed apps.json only when its
// target path is canonical and inside AppsPaths; raw bytes never make it accept anything
// that lists a path outside apps/. Attacks rules 2 and 5 (python-tuf CVE-2021-41131).
func FuzzPutApps(f *testing.F) {
	r := newRepo(f)
	targets := r.file("1.targets.json")
	expires := r.now.Add(year)
	// The committed seeds in testdata/fuzz/FuzzPutApps name paths; raw apps.json seeds
	// there carry signatures of no trusted key. This one is signed by the delegated key.
	f.Add("apps/dw100-app/1.0.0", r.file("1.apps.json"))
	f.Fuzz(func(t *testing.T, name string, raw []byte) {
		v, err := Open(r.root1)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.PutTargets(targets); err != nil {
			t.Fatal(err)
		}
		err = v.PutApps(signRawApps(t, r.appKey, 1, expires, name))
		if err == nil {
			seg := strings.Split(name, "/")
			if !appNameRE.MatchString(name) || seg[1] == "." || seg[1] == ".." || seg[2] == "." || seg[2] == ".." {
				t.Fatalf("PutApps accepted the target path %q", name)
			}
		} else if !errors.Is(err, ErrPath) {
			t.Fatalf("PutApps(%q) = %v, want ErrPath", name, err)
		}
		v2, _ := Open(r.root1)
		_ = v2.PutTargets(targets)
		if err := v2.PutApps(raw); err == nil {
			a, perr := parseTargets(raw)
			if perr != nil {
				t.Fatalf("PutApps accepted bytes it cannot parse: %v", perr)
			}
			for n := range a.Signed.Targets {
				if !appNameRE.MatchString(n) {
					t.Fatalf("PutApps accepted raw metadata with target path %q", n)
				}
			}
		}
	})
}

// FuzzRestore: Restore never panics when one file of a valid set holds arbitrary bytes; it
// refuses with one of its sentinels, or accepts and then serves exactly the bytes given
// (rule 5). The seed's uint8 picks the file, modulo the number of files.
func FuzzRestore(f *testing.F) {
	r := newRepo(f)
	r.putTargets()
	r.putApps()
	r.publish()
	files := r.view.Files()
	for i, file := range files {
		f.Add(uint8(i), file.Data)
	}
	f.Fuzz(func(t *testing.T, i uint8, data []byte) {
		in := slices.Clone(files)
		k := int(i) % len(in)
		in[k].Data = data
		v, err := Restore(in)
		if err != nil {
			if !restoreErr(err) {
				t.Fatalf("Restore(%s = %q) = %v, want a sentinel", in[k].Name, data, err)
			}
			return
		}
		if diff := cmp.Diff(in, v.Files()); diff != "" {
			t.Fatalf("Restore(%s = %q) accepted and serves (-given +served):\n%s", in[k].Name, data, diff)
		}
	})
}
