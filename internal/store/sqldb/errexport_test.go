package sqldb_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/sqlite"
)

// TestListTenant_UsesIndex: the tenant-wide report list walks error_reports_recent in
// its order (no sort of the tenant's reports), whatever the filters and however deep the
// page, so that each batch of the download costs one index range.
func TestListTenant_UsesIndex(t *testing.T) {
	t.Parallel()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Now().UTC()
	after := store.ReportCursor{ReceivedAt: now, DeviceID: "d", ID: "r"}
	for _, c := range []struct {
		name  string
		f     store.ReportFilter
		after store.ReportCursor
	}{
		{"all", store.ReportFilter{}, store.ReportCursor{}},
		{"after", store.ReportFilter{}, after},
		{"product and group", store.ReportFilter{ProductID: "prd_1", GroupID: "grp_1"}, after},
		{"kind and time", store.ReportFilter{Kind: errreport.AppCrash, Since: now.Add(-time.Hour), Until: now}, after},
	} {
		q, args := sqldb.ListTenantQuery("tnt_1", c.f, c.after, 500)
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
		rows.Close()
		got := strings.Join(lines, "\n")
		if !strings.Contains(got, "USING INDEX error_reports_recent") || strings.Contains(got, "TEMP B-TREE") {
			t.Errorf("query plan of ListTenant(%s) =\n%s\nwant the index error_reports_recent and no temporary b-tree", c.name, got)
		}
	}
}
