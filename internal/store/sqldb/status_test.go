package sqldb_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/sqlite"
)

// TestCountStatus_UsesIndex: the fleet-status count walks the devices_running index alone
// (migration 17), with no table rows and no sort, so its
// cost is one index range of the product however large the device rows are.
func TestCountStatus_UsesIndex(t *testing.T) {
	t.Parallel()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, f := range []device.Filter{{ProductID: "prd_1"}, {ProductID: "prd_1", GroupID: "grp_1"}} {
		q, args, err := sqldb.CountStatusQuery("tnt_1", f, 0)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := s.SQL().QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("EXPLAIN QUERY PLAN %s = %v", q, err)
		}
		var lines []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, detail)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		got := strings.Join(lines, "\n")
		if !strings.Contains(got, "USING COVERING INDEX devices_status") || strings.Contains(got, "TEMP B-TREE") {
			t.Errorf("query plan of CountStatus(%+v) =\n%s\nwant the covering index devices_status and no temporary b-tree", f, got)
		}
	}
}
