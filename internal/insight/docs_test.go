package insight_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/insight"
)

// TestDocs_CSVColumns holds the column table of docs/error-reports.md ("CSV download") to
// the columns the download writes, in order.
func TestDocs_CSVColumns(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/error-reports.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## CSV download\n")
	if !ok {
		t.Fatal(`docs/error-reports.md has no "## CSV download" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var got []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(section, -1) {
		got = append(got, m[1])
	}
	if d := cmp.Diff(insight.CSVColumns, got); d != "" {
		t.Errorf("CSV columns in docs/error-reports.md (-code +docs):\n%s", d)
	}
	if !strings.Contains(string(b), "\n## Version health\n") {
		t.Error(`docs/error-reports.md has no "## Version health" section`)
	}
}
