package shop

import (
	"strings"
	"testing"
	"time"
)

const goodReservation = `{"id":"R-000001","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`

func TestDecodeReservation(t *testing.T) {
	t.Parallel()
	r, err := DecodeReservation([]byte(` {"id":"R-000001","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z","shelf":"B4"} `))
	if err != nil || r.ID != "R-000001" || r.Part != "HT-1" || !r.ExpiresAt.Equal(time.Date(2026, 7, 4, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("DecodeReservation() = %+v, %v (unknown members are ignored)", r, err)
	}
}

// TestDecode_RefusesMalformed: a shop's reply of the wrong shape, type, size or encoding
// is refused, never half-read.
func TestDecode_RefusesMalformed(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		``, `null`, `[]`, `"x"`, `{`, goodReservation + `{}`, goodReservation + `}`, goodReservation + ` x`,
		`{"id":1,"part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`,
		`{"id":"","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`,
		`{"id":"` + strings.Repeat("a", 129) + `","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`,
		`{"id":"R\u0000","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`,
		`{"id":"R\n1","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`,
		`{"id":"R-1","part":"../x","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`,
		`{"id":"R-1","part":"HT-1","state":"pending","expires_at":"2026-07-04T08:00:00Z"}`,
		`{"id":"R-1","part":"HT-1","state":"reserved","expires_at":"tomorrow"}`,
		`{"id":"R-1","part":"HT-1","state":"reserved"}`,
		`{"id":"R-1","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z","x":"` + "\xff" + `"}`,
		`{"id":"R-1","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z","pad":"` + strings.Repeat("a", MaxReplyBytes) + `"}`,
	} {
		if r, err := DecodeReservation([]byte(bad)); err == nil {
			t.Errorf("DecodeReservation(%.80q) = %+v, want an error", bad, r)
		}
	}
	for _, bad := range []string{
		`[]`, `{"type":1}`, `{"status":"409"}`, `{"status":409.5}`, `{"status":42}`, `{"detail":"a\u0007b"}`,
		`{"type":"` + strings.Repeat("t", 257) + `"}`, `{"title":"` + strings.Repeat("t", 1025) + `"}`, `{} {}`,
	} {
		if p, err := DecodeProblem([]byte(bad)); err == nil {
			t.Errorf("DecodeProblem(%.80q) = %+v, want an error", bad, p)
		}
	}
	for _, bad := range []string{`{"part":"HT-1"}`, `{"part":"HT-1","in_stock":-1}`, `{"part":"HT-1","in_stock":1.5}`, `{"part":"HT-1","in_stock":1e10}`} {
		if s, err := DecodeStock([]byte(bad)); err == nil {
			t.Errorf("DecodeStock(%q) = %+v, want an error", bad, s)
		}
	}
	if p, err := DecodeProblem([]byte(`{"type":"urn:moat:repair-shop:out-of-stock","status":409,"detail":"none left","extra":[1,2]}`)); err != nil || p.Type != TypeOutOfStock || p.Status != 409 {
		t.Errorf("DecodeProblem(out of stock) = %+v, %v", p, err)
	}
}
