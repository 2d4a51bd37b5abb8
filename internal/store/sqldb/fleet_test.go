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

// TestCountRunning_UsesIndex: the fleet status count walks the devices_running index
// alone (no table rows, no sort), so it costs one index range per tenant however large
// the device rows are; the report count reads only error_reports_image.
func TestCountRunning_UsesIndex(t *testing.T) {
	t.Parallel()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	plan := func(q string, args ...any) string {
		t.Helper()
		rows, err := s.SQL().QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("EXPLAIN QUERY PLAN %s = %v", q, err)
		}
		defer rows.Close()
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
		return strings.Join(lines, "\n")
	}
	for _, f := range []device.Filter{{}, {ProductID: "prd_1"}, {ProductID: "prd_1", GroupID: "grp_1"}} {
		q, args, err := sqldb.CountRunningQuery("tnt_1", f, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := plan(q, args...)
		if !strings.Contains(got, "USING COVERING INDEX devices_running") || strings.Contains(got, "TEMP B-TREE") {
			t.Errorf("query plan of CountRunning(%+v) =\n%s\nwant the covering index devices_running and no temporary b-tree", f, got)
		}
	}
	got := plan(sqldb.CountByImageQuery, "tnt_1", time.Now().UTC(), 10)
	if !strings.Contains(got, "USING COVERING INDEX error_reports_image") {
		t.Errorf("query plan of CountByImage =\n%s\nwant the covering index error_reports_image", got)
	}
}
