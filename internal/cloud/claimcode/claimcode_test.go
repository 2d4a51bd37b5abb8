package claimcode

import (
	"strings"
	"testing"
)

func TestNew_IsWellFormedAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		c := New()
		if len(c) != 19 || strings.Count(c, "-") != 3 {
			t.Fatalf("New() = %q, want 4 groups of 4", c)
		}
		n, err := Normalize(c)
		if err != nil || len(n) != Length {
			t.Fatalf("Normalize(New()) = %q, %v", n, err)
		}
		if seen[n] {
			t.Fatalf("New() repeated %q", c)
		}
		seen[n] = true
	}
}

func TestNormalize(t *testing.T) {
	h1, err := Hash("7K3M-Q9XD-2B8F-RW4T")
	if err != nil {
		t.Fatal(err)
	}
	for _, typed := range []string{"7k3m q9xd 2b8f rw4t", "7K3MQ9XD2B8FRW4T", " 7K3M-Q9XD-2B8F-RW4T "} {
		h, err := Hash(typed)
		if err != nil || h != h1 {
			t.Errorf("Hash(%q) = %s, %v; want the hash of the printed form", typed, h, err)
		}
	}
	a, _ := Hash("0000-1111-0000-1111")
	b, _ := Hash("OOOO-IIII-oooo-llll")
	if a != b {
		t.Error("O, I and L are not read as 0, 1 and 1")
	}
	for _, bad := range []string{"", "7K3M-Q9XD-2B8F", "7K3M-Q9XD-2B8F-RW4TX", "7K3M-Q9XD-2B8F-RW4U", "7K3M-Q9XD-2B8F-RW4é",
		"7K3M_Q9XD_2B8F_RW4T", strings.Repeat("-", 65) + "7K3MQ9XD2B8FRW4T", "<script>alert(1)</script>"} {
		if _, err := Normalize(bad); err == nil {
			t.Errorf("Normalize(%q) accepted a malformed code", bad)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"7K3M-Q9XD-2B8F-RW4T", "oooo iiii llll 0000", "", "ÿÿÿÿ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s)
		if err != nil {
			return
		}
		if len(n) != Length {
			t.Fatalf("Normalize(%q) = %q", s, n)
		}
		if again, err := Normalize(n); err != nil || again != n {
			t.Fatalf("Normalize is not idempotent on %q", n)
		}
	})
}
