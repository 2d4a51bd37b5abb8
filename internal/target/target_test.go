package target_test

import (
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/target"
)

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"apps/dw100-app/1.0.0": true, "os/moat-os/2.0.0+build.1": true, "a/b": true,
		"a": false, "a//b": false, "a/../b": false, "./a": false, "a/b c": false, "a/b\x00": false,
		"apps/" + strings.Repeat("x", 251): false,
	} {
		if got := target.ValidPath(s); got != want {
			t.Errorf("ValidPath(%q) = %t, want %t", s, got, want)
		}
	}
	for s, want := range map[string]bool{"1.0.0": true, "1.0.0-rc.1+b": true, "": false, ".": false, "..": false, "1 0": false, strings.Repeat("1", 65): false} {
		if got := target.ValidVersion(s); got != want {
			t.Errorf("ValidVersion(%q) = %t, want %t", s, got, want)
		}
	}
	for s, want := range map[string]bool{strings.Repeat("ab", 32): true, strings.Repeat("AB", 32): false, strings.Repeat("a", 63): false, strings.Repeat("g", 64): false} {
		if got := target.ValidSHA256(s); got != want {
			t.Errorf("ValidSHA256(%q) = %t, want %t", s, got, want)
		}
	}
}
