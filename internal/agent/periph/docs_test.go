package periph

import (
	"os"
	"strings"
	"testing"
)

// TestDocs_ListEveryOpAndCode keeps docs/app-sdk.md, the protocol's reference for apps in
// other languages, in step with the code: every op, field, error code and limit is named.
func TestDocs_ListEveryOpAndCode(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../../docs/app-sdk.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var want []string
	for op, fields := range opFields {
		want = append(want, "`"+op+"`")
		for _, f := range fields {
			want = append(want, "`"+f.name+"`")
		}
	}
	for _, code := range []string{CodeBadRequest, CodeTooLarge, CodeUnknownOp, CodeCapabilityDenied, CodeUnsupported,
		CodeIOError, CodeUnknownRequest, CodeUnavailable, CodeInternal} {
		want = append(want, "`"+code+"`")
	}
	want = append(want, "65536", "4096", "10000", "60000", "1024", "`\"healthy\"`", "`\"unhealthy\"`")
	for _, w := range want {
		if !strings.Contains(doc, w) {
			t.Errorf("docs/app-sdk.md does not mention %s", w)
		}
	}
}
