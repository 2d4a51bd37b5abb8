package sqldb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/postgres"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestListIssues_UsesIndex: the first page of issues walks error_issues_last_seen (or
// error_issues_reports) backwards and stops at the page's end: no sort, no scan of reports.
func TestListIssues_UsesIndex(t *testing.T) {
	t.Parallel()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, f := range []errreport.IssueFilter{{}, {Sort: errreport.ByReports}, {Kind: errreport.AppCrash, Since: time.Now()},
		{ImageNames: []string{"apps/a", "apps/b"}}} {
		q, args, err := sqldb.ListIssuesQuery("tnt_1", f, store.Page{Limit: 51})
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
		rows.Close()
		got := strings.Join(lines, "\n")
		if !strings.Contains(got, "USING INDEX error_issues_") || strings.Contains(got, "TEMP B-TREE") || strings.Contains(got, "error_reports") {
			t.Errorf("query plan of ListIssues(%+v) =\n%s\nwant an error_issues index, no temporary b-tree", f, got)
		}
	}
}

// BenchmarkListIssues reads the first page of a tenant's issues with 10000 devices and
// 100000 error reports stored, and reports its time against one count of the tenant's
// reports (SELECT count(*) FROM error_reports WHERE tenant_id = $1) measured in the same
// run: the issue list reads one row per issue, so it must not cost more than a few counts
// however many reports there are (issue 11's Performance section: under 5x).
func BenchmarkListIssues(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "moat.db"), time.Now)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		benchListIssues(b, s)
	})
	b.Run("postgres", func(b *testing.B) {
		s, err := postgres.Open(b.Context(), testenv.FreshPostgresDatabase(b), time.Now)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		benchListIssues(b, s)
	})
}

const (
	benchDevices = 10000
	benchReports = 100000
	benchIssues  = 200 // distinct signatures
)

func benchListIssues(b *testing.B, s *sqldb.DB) {
	ctx := b.Context()
	tid := tenant.ID(ident.New(tenant.IDPrefix, time.Now()))
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	start := time.Now()
	seedIssues(b, ctx, s, tid, at)
	b.Logf("seeded %d devices and %d reports in %s", benchDevices, benchReports, time.Since(start).Round(time.Millisecond))

	list := func() int {
		var n int
		err := s.InReadTx(ctx, func(tx store.Tx) error {
			tt, err := tx.ForTenant(tid)
			if err != nil {
				return err
			}
			is, err := tt.ErrorReports().ListIssues(ctx, errreport.IssueFilter{}, store.Page{Limit: 51})
			n = len(is)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	count := func() int {
		var n int
		if err := s.SQL().QueryRowContext(ctx, `SELECT count(*) FROM error_reports WHERE tenant_id = $1`, tid).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	if n, c := list(), count(); n != 51 || c != benchReports {
		b.Fatalf("ListIssues = %d issues, count = %d reports; want 51 and %d", n, c, benchReports)
	}
	const rounds = 20
	t0 := time.Now()
	for range rounds {
		count()
	}
	baseline := time.Since(t0) / rounds
	b.ResetTimer()
	for b.Loop() {
		list()
	}
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(float64(baseline.Nanoseconds()), "count_ns")
	b.ReportMetric(per/float64(baseline.Nanoseconds()), "x_count")
}

// seedIssues claims benchDevices devices in a new tenant and stores benchReports reports
// over benchIssues signatures with bulk inserts, then builds the issue aggregates as
// migration 14 does (RebuildIssues; TestSQLite_Migration14BackfillsIssues holds it to Add).
func seedIssues(b *testing.B, ctx context.Context, s *sqldb.DB, tid tenant.ID, at time.Time) {
	b.Helper()
	t0 := time.Now()
	ids := make([]device.ID, benchDevices)
	err := s.InTx(ctx, func(tx store.Tx) error {
		if err := tx.Tenants().Create(ctx, tenant.Tenant{ID: tid, Name: "bench", CreatedAt: at, UpdatedAt: at, Version: 1}); err != nil {
			return err
		}
		for i := range ids {
			ids[i] = device.ID(fmt.Sprintf("%064x", i))
			if err := tx.Devices().Register(ctx, device.Device{ID: ids[i], PublicKeyPEM: "key", RegisteredAt: at, Floors: map[string]uint32{}, Version: 1}); err != nil {
				return err
			}
			if _, err := tx.Devices().Claim(ctx, ids[i], tid, at); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("devices claimed: %s", time.Since(t0).Round(time.Millisecond))
	const perStmt = 500
	tx, err := s.SQL().BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	for startRow := 0; startRow < benchReports; startRow += perStmt {
		var q strings.Builder
		q.WriteString(`INSERT INTO error_reports (tenant_id, device_id, id, kind, at, received_at, body, image_path, image_version, issue_id) VALUES `)
		var args []any
		for i := startRow; i < startRow+perStmt; i++ {
			code := 2
			version := strconv.Itoa(i % 3)
			when := at.Add(time.Duration(i) * time.Second)
			r := errreport.Report{ID: errreport.NewID(when), Kind: errreport.AppCrash, At: when, ImagePath: "apps/dishwasher/" + version,
				ImageVersion: version, ExitCode: &code, Code: fmt.Sprintf("fault_%d", i%benchIssues), Message: fmt.Sprintf("heater at %d C", 80+i%40)}
			body, err := json.Marshal(r)
			if err != nil {
				b.Fatal(err)
			}
			if i > startRow {
				q.WriteString(", ")
			}
			n := len(args)
			fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9, n+10)
			args = append(args, tid, ids[i%benchDevices], r.ID, r.Kind, when, when, string(body), r.ImagePath, r.ImageVersion,
				errreport.IssueID(errreport.Signature(r)))
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO error_report_counts (tenant_id, device_id, n)
		SELECT tenant_id, device_id, count(*) FROM error_reports WHERE tenant_id = $1 GROUP BY tenant_id, device_id`, tid); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	b.Logf("reports inserted: %s", time.Since(t0).Round(time.Millisecond))
	if err := sqldb.RebuildIssues(ctx, s); err != nil {
		b.Fatal(err)
	}
}
