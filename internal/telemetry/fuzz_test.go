package telemetry_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/telemetry"
)

// fuzzDecode checks a decoder on arbitrary bytes (rule 5): no panic; what it accepts
// validates, encodes, decodes back to an equal value, and re-encodes to the same bytes.
// Seeds: testdata/fuzz/<name>/.
func fuzzDecode[T interface{ Validate() error }](f *testing.F, decode func([]byte) (T, error)) {
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decode(data)
		if err != nil {
			return
		}
		if err := v.Validate(); err != nil {
			t.Fatalf("decoded %q, but Validate() = %v", data, err)
		}
		enc, err := telemetry.Encode(v)
		if err != nil {
			t.Fatalf("Encode(decoded %q) = %v", data, err)
		}
		w, err := decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(decoded %q)) = %v; encoding %q", data, err, enc)
		}
		if diff := cmp.Diff(v, w, compactJSON, emptyReadings); diff != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", data, diff)
		}
		enc2, err := telemetry.Encode(w)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is unstable: %q then %q (%v)", enc, enc2, err)
		}
	})
}

// compactJSON compares raw JSON values without their insignificant white space, which
// Encode drops.
var compactJSON = cmp.Transformer("compact", func(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return "invalid: " + string(raw)
	}
	return b.String()
})

// emptyReadings equates an empty readings map with none: Encode omits both.
var emptyReadings = cmp.FilterValues(func(x, y map[string]telemetry.Reading) bool {
	return len(x) == 0 && len(y) == 0
}, cmp.Ignore())

func FuzzDecodeTelemetry(f *testing.F) { fuzzDecode(f, telemetry.DecodeTelemetry) }
func FuzzDecodeEvent(f *testing.F)     { fuzzDecode(f, telemetry.DecodeEvent) }
func FuzzDecodeRequest(f *testing.F)   { fuzzDecode(f, telemetry.DecodeRequest) }
func FuzzDecodeReply(f *testing.F)     { fuzzDecode(f, telemetry.DecodeReply) }
