package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
)

// InsertFleet publishes two OS versions (moat-os 1.0.0 on Retail and RetailEval, 1.1.0 on
// RetailEval) and three DW100 app versions, deploys app 2.0.0 to every UpdateAll group of
// the platform's product, writes n devices with InsertDevices, refreshes the planner's
// statistics as autovacuum or a periodic ANALYZE keeps them (dialect "sqlite" or
// "postgres"), and returns the database: the large fleet of the benchmarks.
func (p *Platform) InsertFleet(tb testing.TB, n int, dialect string) *sql.DB {
	tb.Helper()
	ctx := context.Background()
	oses := []Image{p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval"), p.PublishOS("moat-os", "1.1.0", 2, "RetailEval")}
	apps := []Image{
		p.PublishApp("dw100-app", "1.0.0", 1, "DW100"), p.PublishApp("dw100-app", "1.1.0", 1, "DW100"), p.PublishApp("dw100-app", "2.0.0", 2, "DW100"),
	}
	groups, err := p.Admin.ListDeviceGroups(ctx, p.Tenant, p.Product, client.ListOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, g := range groups.Items {
		if g.UpdatePolicy == "UpdateAll" {
			if _, err := p.Admin.CreateDeployment(ctx, p.Tenant, p.Product, g.ID, client.DeploymentCreate{Target: apps[2].Path}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	db := p.Server.Store().(interface{ SQL() *sql.DB }).SQL()
	InsertDevices(tb, db, p.Tenant, p.Product, groups.Items, oses, apps, n)
	analyze := "ANALYZE"
	if dialect == "postgres" {
		analyze = "VACUUM ANALYZE devices"
	}
	if _, err := db.ExecContext(ctx, analyze); err != nil {
		tb.Fatal(err)
	}
	return db
}

// InsertDevices writes n claimed devices of the product straight into the devices table in
// one transaction (the setup of a benchmark, not the code under test: BenchmarkFleetStatus,
// BenchmarkConsole_Pages), spread over the
// groups and the images: every tenth never attested, every seventeenth refused at its
// last attestation, every thirteenth with a failed or rolled-back update.
func InsertDevices(b testing.TB, db *sql.DB, tid, pid string, groups []client.DeviceGroup, oses, apps []Image, n int) {
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO devices (id, public_key_pem, registered_at, tenant_id, claimed_at, product_id, group_id,
		blocked, development, floors, attestation, certificate, version,
		running_os_target, running_os_version, running_app_target, running_app_version, attested_at, refusal,
		update_state, update_state_at, last_seen_at)
		VALUES ($1, 'key', $2, $3, $2, $4, $5, false, false, '{}', $6, NULL, 1, $7, $8, $9, $10, $11, $12, $13, $11, $11)`)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = stmt.Close() }() // closed with the transaction anyway
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range n {
		g := groups[i%len(groups)]
		osImg, app := oses[i%len(oses)], apps[(i/2)%len(apps)]
		var att sql.NullString
		var attested sql.NullTime
		osT, osV, appT, appV, refusal, update := "", "", "", "", "", ""
		if i%10 != 0 {
			osT, osV, appT, appV = osImg.Path, osImg.Version, app.Path, app.Version
			attested = sql.NullTime{Time: at, Valid: true}
			if i%17 == 0 {
				refusal = "below_floor"
			}
			att = sql.NullString{Valid: true, String: fmt.Sprintf(`{"at":%q,"refusal":%q,"development_mode":false,"images":[]}`, at.Format(time.RFC3339), refusal)}
			if i%13 == 0 {
				update = []string{"failed", "rolled_back"}[i%2]
			}
		}
		if _, err := stmt.ExecContext(ctx, fmt.Sprintf("%064x", i), at, tid, pid, g.ID, att, osT, osV, appT, appV, attested, refusal, update); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}
