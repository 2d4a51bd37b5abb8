package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// BenchmarkFleetStatus is issue 11's performance check of the fleet-status matrix: with
// 10,000 devices of one product in the store (spread over its five groups, two OS and three
// app versions, never attested, refused and failed updates), each iteration times the
// whole matrix (Service.Status: catalog, groups, deployments, the shoulds and the grouped
// count) and one bare `SELECT count(*) FROM devices WHERE tenant_id = $1` on the same
// database, and reports both and their ratio (x_count; the issue asks under 5). Run on
// SQLite and on PostgreSQL (MOAT_TEST_POSTGRES_DSN).
func BenchmarkFleetStatus(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run(name, func(b *testing.B) {
			var opts []testenv.ServerOption
			if name == "postgres" {
				opts = append(opts, testenv.WithDatabase(testenv.FreshPostgresDatabase(b)))
			}
			benchmarkFleetStatus(b, name, testenv.NewPlatform(b, opts...))
		})
	}
}

func benchmarkFleetStatus(b *testing.B, dialect string, p *testenv.Platform) {
	ctx := context.Background()
	const devices = 10000
	db := p.InsertFleet(b, devices, dialect)

	svc := p.Server.Fleet()
	tid, pid := tenant.ID(p.Tenant), product.ID(p.Product)
	count := func() int {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE tenant_id = $1`, p.Tenant).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	matrix := func() int {
		m, err := svc.Status(ctx, tid, pid, "")
		if err != nil {
			b.Fatal(err)
		}
		return m.Totals.Devices
	}
	if n, m := count(), matrix(); n != devices || m != devices {
		b.Fatalf("count(*) = %d, matrix total = %d, want %d", n, m, devices)
	}
	var base, stat time.Duration
	rounds := 0
	for b.Loop() {
		t0 := time.Now()
		count()
		t1 := time.Now()
		matrix()
		base, stat, rounds = base+t1.Sub(t0), stat+time.Since(t1), rounds+1
	}
	perCount, perMatrix := float64(base.Nanoseconds())/float64(rounds), float64(stat.Nanoseconds())/float64(rounds)
	b.ReportMetric(perCount, "count_ns/op")
	b.ReportMetric(perMatrix, "matrix_ns/op")
	b.ReportMetric(perMatrix/perCount, "x_count")
}
