package cloud_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite" // reads the cloud's table as an attacker with the database would

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/cloud/claimcode"
	"github.com/moat-iot/moat/internal/testenv/cloudenv"
)

// TestAPI_OtherTenantSeesNothingOfOwners attacks rule 3 on the owners' staff routes:
// another tenant's Administrator gets 401 on each and changes nothing.
func TestAPI_OtherTenantSeesNothingOfOwners(t *testing.T) {
	t.Parallel()
	e := cloudenv.NewCloud(t)
	e.Start(t, e.Config())
	other, err := e.P.Op.CreateTenant(t.Context(), client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.P.Op.CreateMember(t.Context(), other.ID, client.MemberCreate{Name: "fabrikam-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	stranger := e.APIClient(t, m.Secret)
	ctx := t.Context()
	dev := strings.Repeat("ab", 32)
	calls := map[string]func() error{
		"service requests": func() error { _, err := stranger.ListServiceRequests(ctx, client.ServiceRequestQuery{}); return err },
		"update request": func() error {
			_, err := stranger.UpdateServiceRequest(ctx, "1", client.ServiceRequestUpdate{State: "done"})
			return err
		},
		"reservations": func() error { _, err := stranger.ListReservations(ctx, client.ReservationQuery{}); return err },
		"claim codes": func() error {
			_, err := stranger.CreateClaimCodes(ctx, client.ClaimCodesCreate{Product: "DW100", Devices: []string{dev}})
			return err
		},
		"sales": func() error {
			_, err := stranger.RecordSale(ctx, client.SaleRecord{Device: dev, Product: "DW100", SoldAt: "2026-05-01", Shop: "shop-1"})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !isStatus(err, 401) {
			t.Errorf("%s as another tenant's Administrator: %v, want 401", name, err)
		}
	}
	db := openCloudDB(t, e)
	for _, table := range []string{"claim_codes", "sales"} {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s after the stranger's attempts: %d rows, %v; want none", table, n, err)
		}
	}
}

func openCloudDB(t *testing.T, e *cloudenv.Cloud) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.Dir, "cloud", "cloud.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestAPI_ClaimCodesShownOnceStoredHashed: the codes are in the answer only; the table
// holds their hashes, never a code; making codes again replaces them (the old code is
// useless); a Reader cannot make them; bad input stores nothing.
func TestAPI_ClaimCodesShownOnceStoredHashed(t *testing.T) {
	t.Parallel()
	e := cloudenv.NewCloud(t)
	e.Start(t, e.Config())
	ctx := t.Context()
	devs := []string{strings.Repeat("0a", 32), strings.Repeat("0b", 32), strings.Repeat("0c", 32)}
	db := openCloudDB(t, e)
	count := func() int {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM claim_codes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	reader := e.APIClient(t, func() string {
		m, err := e.P.Admin.CreateMember(ctx, e.P.Tenant, client.MemberCreate{Name: "reader", Role: client.RoleReader})
		if err != nil {
			t.Fatal(err)
		}
		return m.Secret
	}())
	if _, err := reader.CreateClaimCodes(ctx, client.ClaimCodesCreate{Product: "DW100", Devices: devs}); !isStatus(err, 403) {
		t.Errorf("a Reader makes claim codes: %v, want 403", err)
	}
	if _, err := reader.RecordSale(ctx, client.SaleRecord{Device: devs[0], Product: "DW100", SoldAt: "2026-05-01", Shop: "shop-1"}); !isStatus(err, 403) {
		t.Errorf("a Reader records a sale: %v, want 403", err)
	}
	many := make([]string, 1001)
	for i := range many {
		many[i] = strings.Repeat("0", 60) + hex4(i)
	}
	for name, req := range map[string]client.ClaimCodesCreate{
		"no devices":     {Product: "DW100"},
		"bad device":     {Product: "DW100", Devices: []string{devs[0], "../../etc/passwd"}},
		"upper-case hex": {Product: "DW100", Devices: []string{strings.ToUpper(devs[0])}},
		"duplicate":      {Product: "DW100", Devices: []string{devs[0], devs[0]}},
		"bad product":    {Product: "DW 100; DROP TABLE", Devices: devs},
		"1001 devices":   {Product: "DW100", Devices: many},
	} {
		if _, err := e.Admin.CreateClaimCodes(ctx, req); !isStatus(err, 400) {
			t.Errorf("%s: %v, want 400", name, err)
		}
	}
	for name, req := range map[string]client.SaleRecord{
		"bad date":   {Device: devs[0], Product: "DW100", SoldAt: "01/05/2026", Shop: "shop-1"},
		"future":     {Device: devs[0], Product: "DW100", SoldAt: "2999-01-01", Shop: "shop-1"},
		"bad shop":   {Device: devs[0], Product: "DW100", SoldAt: "2026-05-01", Shop: "Shop One"},
		"bad device": {Device: "x", Product: "DW100", SoldAt: "2026-05-01", Shop: "shop-1"},
	} {
		if _, err := e.Admin.RecordSale(ctx, req); !isStatus(err, 400) {
			t.Errorf("sale %s: %v, want 400", name, err)
		}
	}
	if n := count(); n != 0 {
		t.Fatalf("claim codes after bad requests: %d, want 0", n)
	}
	var sales int
	if err := db.QueryRow(`SELECT count(*) FROM sales`).Scan(&sales); err != nil || sales != 0 {
		t.Fatalf("sales after bad requests: %d, %v", sales, err)
	}

	got, err := e.Admin.CreateClaimCodes(ctx, client.ClaimCodesCreate{Product: "DW100", Devices: devs})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Items) != len(devs) {
		t.Fatalf("codes = %+v, want one per device", got.Items)
	}
	rows, err := db.Query(`SELECT device, product, code_hash FROM claim_codes ORDER BY device`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	stored := map[string]string{}
	var dump strings.Builder
	for rows.Next() {
		var d, p, h string
		if err := rows.Scan(&d, &p, &h); err != nil {
			t.Fatal(err)
		}
		stored[d] = h
		dump.WriteString(d + p + h)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for i, c := range got.Items {
		if c.Device != devs[i] {
			t.Errorf("code %d is for %s, want %s", i, c.Device, devs[i])
		}
		norm, err := claimcode.Normalize(c.Code)
		if err != nil {
			t.Fatalf("code %q: %v", c.Code, err)
		}
		h, _ := claimcode.Hash(c.Code)
		if stored[c.Device] != h {
			t.Errorf("stored hash of %s = %s, want claimcode.Hash of the code", c.Device, stored[c.Device])
		}
		if strings.Contains(strings.ToUpper(dump.String()), norm) {
			t.Errorf("the table holds code %s in the clear", c.Code)
		}
	}
	// Made again: new codes, the old ones replaced.
	again, err := e.Admin.CreateClaimCodes(ctx, client.ClaimCodesCreate{Product: "DW100", Devices: devs[:1]})
	if err != nil {
		t.Fatal(err)
	}
	var h string
	if err := db.QueryRow(`SELECT code_hash FROM claim_codes WHERE device = ?`, devs[0]).Scan(&h); err != nil {
		t.Fatal(err)
	}
	newHash, _ := claimcode.Hash(again.Items[0].Code)
	if again.Items[0].Code == got.Items[0].Code || h != newHash {
		t.Errorf("codes made again: the old code still stands")
	}
	sale, err := e.Admin.RecordSale(ctx, client.SaleRecord{Device: devs[0], Product: "DW100", SoldAt: "2026-05-01", Shop: "shop-1"})
	if err != nil {
		t.Fatal(err)
	}
	if sale.SoldAt.Format("2006-01-02") != "2026-05-01" || sale.Shop != "shop-1" {
		t.Errorf("sale = %+v", sale)
	}
}

func hex4(i int) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[i>>12&15], digits[i>>8&15], digits[i>>4&15], digits[i&15]})
}
