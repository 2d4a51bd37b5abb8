package director_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/director"
)

type entry struct {
	sha256 string
	length int64
	sv     uint32
}

// repo is a verified image repository view as the update client would hold it.
type repo map[string]entry

func (r repo) lookup(path string) (string, int64, uint32, bool) {
	e, ok := r[path]
	return e.sha256, e.length, e.sv, ok
}

func repoFor(a director.Assignment) repo {
	r := repo{"apps/dw100/1.1.0": {strings.Repeat("01", 32), 3 << 20, 1}}
	for _, im := range a.Images {
		r[im.Path] = entry{im.SHA256, im.Length, im.SecurityVersion}
	}
	return r
}

var floors = map[string]uint32{"os": 4, "app": 2}

func TestCheckAgainstRepo_Accepts(t *testing.T) {
	t.Parallel()
	a := validAssignment()
	if err := director.CheckAgainstRepo(a, repoFor(a).lookup, floors); err != nil {
		t.Fatalf("CheckAgainstRepo(matching) = %v", err)
	}
	a.Images = nil
	if err := director.CheckAgainstRepo(a, repo{}.lookup, nil); err != nil {
		t.Fatalf("CheckAgainstRepo(no images) = %v", err)
	}
}

// TestCheckAgainstRepo_RejectsMismatch: ATTACKS row 18, director-only compromise. An
// assignment whose image differs from the offline-signed repository is refused.
func TestCheckAgainstRepo_RejectsMismatch(t *testing.T) {
	t.Parallel()
	a := validAssignment()
	for name, f := range map[string]func(repo){
		"hash": func(r repo) {
			e := r["os/moat-os/3.1.0"]
			e.sha256 = strings.Repeat("ee", 32)
			r["os/moat-os/3.1.0"] = e
		},
		"hash-upper-case": func(r repo) {
			e := r["os/moat-os/3.1.0"]
			e.sha256 = strings.ToUpper(e.sha256)
			r["os/moat-os/3.1.0"] = e
		},
		"length":           func(r repo) { e := r["apps/dw100/1.2.0"]; e.length++; r["apps/dw100/1.2.0"] = e },
		"security-version": func(r repo) { e := r["apps/dw100/1.2.0"]; e.sv = 1; r["apps/dw100/1.2.0"] = e },
		"missing-path":     func(r repo) { delete(r, "apps/dw100/1.2.0") },
		"missing-os":       func(r repo) { delete(r, "os/moat-os/3.1.0") },
	} {
		r := repoFor(a)
		f(r)
		if err := director.CheckAgainstRepo(a, r.lookup, floors); !errors.Is(err, director.ErrRepoMismatch) {
			t.Errorf("CheckAgainstRepo(%s) = %v, want %v", name, err, director.ErrRepoMismatch)
		}
	}
}

// TestCheckAgainstRepo_RejectsBelowFloor: ATTACKS row 26. The director assigns an older
// image that the offline key did sign; the device's floor refuses it.
func TestCheckAgainstRepo_RejectsBelowFloor(t *testing.T) {
	t.Parallel()
	a := validAssignment()
	a.Images[1] = director.Image{Kind: "app", Path: "apps/dw100/1.1.0", SHA256: strings.Repeat("01", 32), Length: 3 << 20, Version: "1.1.0", SecurityVersion: 1}
	err := director.CheckAgainstRepo(a, repoFor(a).lookup, floors)
	if !errors.Is(err, director.ErrBelowFloor) {
		t.Fatalf("CheckAgainstRepo(v(n-1)) = %v, want %v", err, director.ErrBelowFloor)
	}
	if errors.Is(err, director.ErrRepoMismatch) {
		t.Errorf("CheckAgainstRepo(v(n-1)) = %v, want no repository mismatch", err)
	}
	osFloor := map[string]uint32{"os": 5, "app": 0}
	if err := director.CheckAgainstRepo(validAssignment(), repoFor(validAssignment()).lookup, osFloor); !errors.Is(err, director.ErrBelowFloor) {
		t.Errorf("CheckAgainstRepo(os below floor) = %v, want %v", err, director.ErrBelowFloor)
	}
}

func TestCheckAgainstRepo_FailsClosed(t *testing.T) {
	t.Parallel()
	a := validAssignment()
	r := repoFor(a)
	if err := director.CheckAgainstRepo(a, r.lookup, map[string]uint32{"os": 0}); err == nil {
		t.Error("CheckAgainstRepo(no app floor) = nil, want error")
	}
	if err := director.CheckAgainstRepo(a, nil, floors); err == nil {
		t.Error("CheckAgainstRepo(nil lookup) = nil, want error")
	}
	bad := validAssignment()
	bad.Images[0].Length = 0
	if err := director.CheckAgainstRepo(bad, repoFor(bad).lookup, floors); !errors.Is(err, director.ErrMalformed) {
		t.Errorf("CheckAgainstRepo(invalid) = %v, want %v", err, director.ErrMalformed)
	}
}
