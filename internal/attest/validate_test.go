package attest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/attest"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	m := func(e *attest.Evidence) *attest.Measurement { return &e.Measurements[1] }
	for _, tc := range []struct {
		name   string
		change func(*attest.Evidence)
		want   string // substring of the error; "" means valid
	}{
		{"valid", func(*attest.Evidence) {}, ""},
		{"no measurements", func(e *attest.Evidence) { e.Measurements = nil }, ""},
		{"only os", func(e *attest.Evidence) { e.Measurements = e.Measurements[:1] }, ""},
		{"format 0", func(e *attest.Evidence) { e.Format = 0 }, "format"},
		{"format 2", func(e *attest.Evidence) { e.Format = 2 }, "format"},
		{"empty device", func(e *attest.Evidence) { e.DeviceID = "" }, "device_id"},
		{"upper-case device", func(e *attest.Evidence) { e.DeviceID = strings.ToUpper(e.DeviceID) }, "device_id"},
		{"short device", func(e *attest.Evidence) { e.DeviceID = e.DeviceID[:63] }, "device_id"},
		{"empty nonce", func(e *attest.Evidence) { e.Nonce = "" }, "nonce"},
		{"short nonce", func(e *attest.Evidence) { e.Nonce = e.Nonce[:42] }, "nonce"},
		{"padded nonce", func(e *attest.Evidence) { e.Nonce += "=" }, "nonce"},
		{"std base64 nonce", func(e *attest.Evidence) { e.Nonce = strings.Repeat("+", 42) + "A" }, "nonce"},
		{"non-zero trailing bits", func(e *attest.Evidence) { e.Nonce = e.Nonce[:42] + "B" }, "nonce"},
		{"zero time", func(e *attest.Evidence) { e.Time = time.Time{} }, "time"},
		{"local time", func(e *attest.Evidence) { e.Time = e.Time.In(time.FixedZone("X", 3600)) }, "UTC"},
		{"fractional time", func(e *attest.Evidence) { e.Time = e.Time.Add(time.Millisecond) }, "fraction"},
		{"year 1999", func(e *attest.Evidence) { e.Time = time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC) }, "year"},
		{"two os", func(e *attest.Evidence) { e.Measurements[1] = e.Measurements[0] }, "second measurement"},
		{"too many", func(e *attest.Evidence) {
			for range 8 {
				e.Measurements = append(e.Measurements, e.Measurements[0])
			}
		}, "at most 8"},
		{"unknown kind", func(e *attest.Evidence) { m(e).Kind = "firmware" }, "kind"},
		{"app under os/", func(e *attest.Evidence) { m(e).Path = "os/dw100/1.2.0" }, "not under apps/"},
		{"os under apps/", func(e *attest.Evidence) { e.Measurements[0].Path = "apps/moat-os/3.1.0" }, "not under os/"},
		{"path traversal", func(e *attest.Evidence) { m(e).Path = "apps/../1.2.0" }, "path"},
		{"absolute path", func(e *attest.Evidence) { m(e).Path = "/apps/dw100/1.2.0" }, "path"},
		{"one segment", func(e *attest.Evidence) { m(e).Path = "1.2.0" }, "path"},
		{"path not ending in version", func(e *attest.Evidence) { m(e).Path = "apps/dw100/1.3.0" }, "does not end"},
		{"long path", func(e *attest.Evidence) { m(e).Path = "apps/" + strings.Repeat("a", 250) + "/1.2.0" }, "path"},
		{"empty version", func(e *attest.Evidence) { m(e).Version = "" }, "version"},
		{"version with slash", func(e *attest.Evidence) { m(e).Version = "1/2" }, "version"},
		{"short sha", func(e *attest.Evidence) { m(e).SHA256 = "ab" }, "sha256"},
		{"upper sha", func(e *attest.Evidence) { m(e).SHA256 = strings.Repeat("AB", 32) }, "sha256"},
	} {
		e := validEvidence(t)
		tc.change(&e)
		err := e.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: Validate = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
