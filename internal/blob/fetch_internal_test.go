package blob

import (
	"strconv"
	"testing"
)

func TestParseContentRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-0/1", 0, 0, 1, true},
		{"bytes 100-199/1000", 100, 199, 1000, true},
		{"bytes 999-999/1000", 999, 999, 1000, true},
		{"bytes 100-199/*", 0, 0, 0, false},
		{"bytes */1000", 0, 0, 0, false},
		{"bytes 200-100/1000", 0, 0, 0, false},
		{"bytes 0-1000/1000", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"bytes +1-5/10", 0, 0, 0, false},
		{"bytes  1-5/10", 0, 0, 0, false},
		{"bytes 1-5/10 ", 0, 0, 0, false},
		{"Bytes 1-5/10", 0, 0, 0, false},
		{"items 1-5/10", 0, 0, 0, false},
		{"bytes 1-5", 0, 0, 0, false},
		{"bytes 0-9223372036854775807/9223372036854775807", 0, 0, 0, false},
		{"bytes 0-1/99999999999999999999", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, tc := range tests {
		start, end, total, ok := parseContentRange(tc.in)
		if start != tc.start || end != tc.end || total != tc.total || ok != tc.ok {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v, want %d, %d, %d, %v",
				tc.in, start, end, total, ok, tc.start, tc.end, tc.total, tc.ok)
		}
	}
}

// FuzzParseContentRange: a server's Content-Range never panics the client, and what it
// accepts is a well-formed range that re-encodes to itself.
func FuzzParseContentRange(f *testing.F) {
	f.Add("bytes 100-199/1000")
	f.Add("bytes 0-0/1")
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, ok := parseContentRange(s)
		if !ok {
			return
		}
		if start < 0 || start > end || end >= total {
			t.Fatalf("parseContentRange(%q) = %d, %d, %d: not a range within the total", s, start, end, total)
		}
		re := "bytes " + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(end, 10) + "/" + strconv.FormatInt(total, 10)
		if _, _, _, ok := parseContentRange(re); !ok {
			t.Fatalf("parseContentRange(%q) rejects its own re-encoding %q", s, re)
		}
	})
}
