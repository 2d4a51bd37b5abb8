package image

import "testing"

func TestValidSemver(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{
		"0.0.0": true, "1.2.3": true, "10.20.30": true, "1.0.0-alpha": true, "1.0.0-alpha.1": true,
		"1.0.0-0.3.7": true, "1.0.0-x.7.z.92": true, "1.0.0-x-y-z.--": true, "1.0.0+20130313144700": true,
		"1.0.0-beta+exp.sha.5114f85": true, "1.0.0+21AF26D3----117B344092BD": true, "1.0.0-rc.1+build.001": true,

		"": false, "1": false, "1.2": false, "1.2.3.4": false, "v1.2.3": false, "01.2.3": false,
		"1.02.3": false, "1.2.03": false, "1.2.3-": false, "1.2.3+": false, "1.2.3-01": false,
		"1.2.3-a..b": false, "1.2.3-a_b": false, "1.2.3+a+b": false, " 1.2.3": false, "1.2.3 ": false,
		"1.2.-3": false, "a.b.c": false, "1.2.3-\u00e9": false, "1.2.3-" + string(make([]byte, 130)): false,
	} {
		if got := validSemver(v); got != want {
			t.Errorf("validSemver(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestCheckPath is the path rule Pack and Unpack share (ATTACKS row 17).
func TestCheckPath(t *testing.T) {
	t.Parallel()
	for p, ok := range map[string]bool{
		"a": true, "a/b": true, "bin/dw100": true, "a.b/c..d": true, "..a": true, "a..": true, "\u00fcml\u00e4ut": true,
		"": false, ".": false, "..": false, "../a": false, "a/..": false, "a/../b": false, "/a": false,
		"./a": false, "a/./b": false, "a/": false, "a//b": false, `a\b`: false, `..\a`: false, "a\x00b": false,
		"a\nb": false, "\xff": false, "a\u0085b": false,
	} {
		if err := checkPath(p); (err == nil) != ok {
			t.Errorf("checkPath(%q) = %v, want ok %v", p, err, ok)
		}
	}
}
