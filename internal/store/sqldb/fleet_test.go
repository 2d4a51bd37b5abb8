package sqldb_test

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/tenant"
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

// BenchmarkCountRunning counts a tenant's 10000 devices per group and what they run, and
// reports the ratio to the baseline it replaces: loading every device (List, a page of
// 1000 at a time) and counting in Go.
func BenchmarkCountRunning(b *testing.B) {
	s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "moat.db"), time.Now)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const devices = 10000
	tid := tenant.ID(ident.New(tenant.IDPrefix, time.Now()))
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err = s.InTx(b.Context(), func(tx store.Tx) error {
		if err := tx.Tenants().Create(b.Context(), tenant.Tenant{ID: tid, Name: "bench", CreatedAt: at, UpdatedAt: at, Version: 1}); err != nil {
			return err
		}
		for i := range devices {
			id := device.ID(fmt.Sprintf("%064x", i))
			d := device.Device{ID: id, PublicKeyPEM: "key", RegisteredAt: at, Floors: map[string]uint32{}, Version: 1}
			if err := tx.Devices().Register(b.Context(), d); err != nil {
				return err
			}
			if d, err = tx.Devices().Claim(b.Context(), id, tid, at); err != nil {
				return err
			}
			v := strconv.Itoa(i % 5)
			d.Attestation = &device.Attestation{At: at, Serial: "01", Images: []device.Measurement{
				{Kind: "os", Path: "os/moat/" + v, SHA256: strings.Repeat("a", 64), Version: v},
				{Kind: "app", Path: "apps/dishwasher/" + v, SHA256: strings.Repeat("b", 64), Version: v},
			}}
			d.Version++
			if err := tx.Devices().Update(b.Context(), d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	count := func() int {
		var n int
		err := s.InReadTx(b.Context(), func(tx store.Tx) error {
			tt, err := tx.ForTenant(tid)
			if err != nil {
				return err
			}
			counts, err := tt.Devices().CountRunning(b.Context(), device.Filter{}, 0)
			for _, c := range counts {
				n += c.Devices
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	loadAll := func() int {
		groups := map[device.Running]int{}
		err := s.InReadTx(b.Context(), func(tx store.Tx) error {
			tt, err := tx.ForTenant(tid)
			if err != nil {
				return err
			}
			for p := (store.Page{Limit: 1000}); ; {
				ds, err := tt.Devices().List(b.Context(), device.Filter{}, p)
				if err != nil || len(ds) == 0 {
					return err
				}
				for _, d := range ds {
					r, _ := d.Attestation.Running()
					groups[r]++
				}
				p.After = string(ds[len(ds)-1].ID)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, c := range groups {
			n += c
		}
		return n
	}
	if n, m := count(), loadAll(); n != devices || m != devices {
		b.Fatalf("counted %d and %d devices, want %d", n, m, devices)
	}
	const rounds = 5
	start := time.Now()
	for range rounds {
		loadAll()
	}
	baseline := time.Since(start) / rounds
	b.ResetTimer()
	for b.Loop() {
		count()
	}
	b.ReportMetric(float64(baseline.Nanoseconds())/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x_faster_than_loading_all")
}
