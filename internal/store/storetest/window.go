package storetest

import (
	"database/sql"
	"strings"

	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// windowTests: a group's maintenance window and a product's deferral bound (issue 12)
// are stored, read back and cleared exactly.
var windowTests = []test{
	{"GroupMaintenanceWindowRoundTrip", func(h *harness) {
		tn := h.tenant("acme")
		p := h.product(tn.ID, "DW100")
		g := h.newGroup(tn.ID, p.ID, "Production")
		g.MaintenanceWindow = &product.MaintenanceWindow{Days: []string{"mon", "fri"}, Start: "02:00", Length: "3h0m0s", TimeZone: "Europe/Berlin"}
		h.mustIn("Groups().Create", tn.ID, func(tt store.TenantTx) error { return tt.Groups().Create(h.ctx(), g) })
		got, err := h.getGroup(tn.ID, p.ID, g.ID)
		wantEqual(h.t, "Groups().Get", got, err, g)

		g.MaintenanceWindow = &product.MaintenanceWindow{Days: []string{"sun"}, Start: "23:30", Length: "24h0m0s", TimeZone: "UTC"}
		g.Version, g.UpdatedAt = g.Version+1, h.tick()
		h.mustIn("Groups().Update", tn.ID, func(tt store.TenantTx) error { return tt.Groups().Update(h.ctx(), g) })
		got, err = h.getGroup(tn.ID, p.ID, g.ID)
		wantEqual(h.t, "Groups().Get after update", got, err, g)

		g.MaintenanceWindow = nil
		g.Version, g.UpdatedAt = g.Version+1, h.tick()
		h.mustIn("Groups().Update(clear)", tn.ID, func(tt store.TenantTx) error { return tt.Groups().Update(h.ctx(), g) })
		got, err = h.getGroup(tn.ID, p.ID, g.ID)
		wantEqual(h.t, "Groups().Get after clearing", got, err, g)
	}},
	{"ProductMaxUpdateDeferralRoundTrip", func(h *harness) {
		tn := h.tenant("acme")
		p := h.newProduct(tn.ID, "DW100")
		p.MaxUpdateDeferralSeconds = 86400
		h.mustIn("Products().Create", tn.ID, func(tt store.TenantTx) error { return tt.Products().Create(h.ctx(), p) })
		got, err := h.getProduct(tn.ID, p.ID)
		wantEqual(h.t, "Products().Get", got, err, p)
		p.MaxUpdateDeferralSeconds = 7 * 86400
		p.Version, p.UpdatedAt = p.Version+1, h.tick()
		h.mustIn("Products().Update", tn.ID, func(tt store.TenantTx) error { return tt.Products().Update(h.ctx(), p) })
		got, err = h.getProduct(tn.ID, p.ID)
		wantEqual(h.t, "Products().Get after update", got, err, p)
	}},
}

// legacyProductAndGroup writes a product and a group as a release before schema 19 did
// (no deferral bound, no maintenance window), for the backfill tests that start from an
// older schema.
func legacyProductAndGroup(h *harness, db *sql.DB, tid tenant.ID) (product.Product, product.Group) {
	h.t.Helper()
	p := h.newProduct(tid, "DW100")
	g := h.newGroup(tid, p.ID, "Production")
	if _, err := db.ExecContext(h.ctx(), `INSERT INTO products (id, tenant_id, name, name_fold, description, created_at, updated_at, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		p.ID, tid, p.Name, strings.ToLower(p.Name), p.Description, p.CreatedAt.UTC(), p.UpdatedAt.UTC(), p.Version); err != nil {
		h.t.Fatalf("older schema: insert product = %v", err)
	}
	if _, err := db.ExecContext(h.ctx(), `INSERT INTO device_groups (id, tenant_id, product_id, name, name_fold, description, os_feed, update_policy, created_at, updated_at, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		g.ID, tid, p.ID, g.Name, strings.ToLower(g.Name), g.Description, g.OSFeed, g.UpdatePolicy, g.CreatedAt.UTC(), g.UpdatedAt.UTC(), g.Version); err != nil {
		h.t.Fatalf("older schema: insert group = %v", err)
	}
	return p, g
}
