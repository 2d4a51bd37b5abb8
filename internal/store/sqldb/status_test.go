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

// TestCountStatus_UsesIndex: on SQLite the fleet-status count walks the devices_status
// index of migration 17 in the order of its key, with no sort, over one range per product:
// the statement's key expression must stay identical to the index's.
func TestCountStatus_UsesIndex(t *testing.T) {
	t.Parallel()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, f := range []device.Filter{{ProductID: "prd_1"}, {ProductID: "prd_1", GroupID: "grp_1"}} {
		q, args, err := sqldb.CountStatusQuery("sqlite", "tnt_1", f, 0)
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
		if !strings.Contains(got, "USING INDEX devices_status") || strings.Contains(got, "TEMP B-TREE") {
			t.Errorf("query plan of CountStatus(%+v) =\n%s\nwant the index devices_status and no temporary b-tree", f, got)
		}
	}
}
