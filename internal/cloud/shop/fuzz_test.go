package shop

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeReservation: no panic; what decodes keeps the contract and re-encodes to a
// reply that decodes to the same reservation.
func FuzzDecodeReservation(f *testing.F) {
	f.Add([]byte(goodReservation))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeReservation(data)
		if err != nil {
			return
		}
		if r.ID == "" || len(r.ID) > MaxIDBytes || !PartRE.MatchString(r.Part) || r.State != StateReserved {
			t.Fatalf("DecodeReservation(%q) = %+v outside the contract", data, r)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := DecodeReservation(again)
		if err != nil || r2.ID != r.ID || r2.Part != r.Part || !r2.ExpiresAt.Equal(r.ExpiresAt) {
			t.Fatalf("re-encoded %s = %+v, %v, want %+v", again, r2, err, r)
		}
	})
}

// FuzzDecodeProblem: no panic; what decodes is within the bounds.
func FuzzDecodeProblem(f *testing.F) {
	f.Add([]byte(`{"type":"urn:moat:repair-shop:out-of-stock","title":"Conflict","status":409,"detail":"none left"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeProblem(data)
		if err != nil {
			return
		}
		if len(p.Type) > maxProblemType || len(p.Title) > maxProblemText || len(p.Detail) > maxProblemText || p.Status != 0 && (p.Status < 100 || p.Status > 599) {
			t.Fatalf("DecodeProblem(%q) = %+v outside the bounds", data, p)
		}
	})
}
