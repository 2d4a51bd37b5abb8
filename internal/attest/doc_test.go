package attest_test

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/attest"
)

// TestDoc_ExampleVerifies keeps the example envelope in docs/attestation-evidence.md true:
// it is signed by the test key, verifies, and says what validEvidence says.
func TestDoc_ExampleVerifies(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/attestation-evidence.md")
	if err != nil {
		t.Fatal(err)
	}
	var example string
	for line := range strings.Lines(string(doc)) {
		if strings.HasPrefix(line, `{"signed":`) {
			example = strings.TrimSuffix(line, "\n")
			break
		}
	}
	if example == "" {
		t.Fatal(`docs/attestation-evidence.md has no line starting {"signed":`)
	}
	got, err := attest.Verify([]byte(example), &keyA(t).PublicKey, expectA(t))
	if err != nil {
		t.Fatalf("Verify(docs example) = %v", err)
	}
	if diff := cmp.Diff(validEvidence(t), got); diff != "" {
		t.Errorf("docs example (-validEvidence +docs):\n%s", diff)
	}
}
