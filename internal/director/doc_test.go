package director_test

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/moat-iot/moat/internal/director"
)

// TestDoc_ExampleVerifies keeps the example envelope in docs/director.md true: it is signed
// by the test key, verifies, and says what validAssignment says.
func TestDoc_ExampleVerifies(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/director.md")
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
		t.Fatal(`docs/director.md has no line starting {"signed":`)
	}
	got, err := director.Verify([]byte(example), &directorKey(t).PublicKey, expectA())
	if err != nil {
		t.Fatalf("Verify(docs example) = %v", err)
	}
	if diff := cmp.Diff(validAssignment(), got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("docs example (-validAssignment +docs):\n%s", diff)
	}
}
