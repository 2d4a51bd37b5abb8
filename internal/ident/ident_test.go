package ident_test

import (
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
)

func TestNew_SortsByCreation(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	prev := ident.New("prd", now)
	for i := range 10000 {
		at := now
		if i%3 == 0 {
			at = now.Add(-time.Second) // a clock step back must not reorder
		}
		id := ident.New("prd", at)
		if id <= prev {
			t.Fatalf("New #%d = %s, not after %s", i, id, prev)
		}
		if !ident.Valid("prd", id) {
			t.Fatalf("Valid(%s) = false", id)
		}
		prev = id
	}
}

func TestValid(t *testing.T) {
	t.Parallel()
	id := ident.New("grp", time.Now())
	for _, s := range []string{"", "grp_", "prd" + id[3:], id + "0", strings.ToUpper(id), id[:len(id)-1] + "g", "grp_../../etc/passwd"} {
		if ident.Valid("grp", s) {
			t.Errorf("Valid(grp, %q) = true", s)
		}
	}
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"DW100":                    "",
		"Field Test OS Evaluation": "",
		strings.Repeat("é", 64):    "",
		"":                         "name_required",
		strings.Repeat("é", 65):    "name_too_long",
		" x":                       "name_whitespace",
		"x\n":                      "name_whitespace",
		"a\x00b":                   "invalid_character",
		"a\xffb":                   "invalid_utf8",
		"a\uFFFDb":                 "invalid_utf8",
	} {
		var v problem.Validation
		ident.CheckName(&v, "name", name)
		got := ""
		if err := v.Err(); err != nil {
			got = problem.From(err).Code
		}
		if got != want {
			t.Errorf("CheckName(%q) = %q, want %q", name, got, want)
		}
	}
}
