package cloudstore_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/claimcode"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/testenv"
)

// The owners' side of the store (issue 14), on both databases.
func TestAppliances(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(*testing.T) *cloudstore.Store{"SQLite": openSQLite, "Postgres": openPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if name == "Postgres" {
				testenv.PostgresDSN(t)
			}
			for sub, fn := range map[string]func(*testing.T, *cloudstore.Store){
				"ClaimOnceAndHandOver":    testClaimOnceAndHandOver,
				"OwnersRefuseBadInput":    testOwnersRefuseBadInput,
				"ServiceRequests":         testServiceRequests,
				"ReservationsAndPrompts":  testReservationsAndPrompts,
				"AlertEnqueuesItsActions": testAlertEnqueuesItsActions,
			} {
				t.Run(sub, func(t *testing.T) {
					t.Parallel()
					fn(t, open(t))
				})
			}
		})
	}
}

const fakeHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

func mustOwner(t *testing.T, s *cloudstore.Store, email string) cloudstore.Owner {
	t.Helper()
	o, err := s.CreateOwner(t.Context(), cloudstore.NewOwner{Email: email, Name: "Owner " + email, PasswordHash: fakeHash, CreatedAt: t0})
	if err != nil {
		t.Fatalf("CreateOwner(%s) = %v", email, err)
	}
	return o
}

func mustCode(t *testing.T, s *cloudstore.Store, dev string, issuedBy int64) string {
	t.Helper()
	code := claimcode.New()
	h, err := claimcode.Hash(code)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutClaimCodes(t.Context(), []cloudstore.ClaimCode{{Device: dev, Product: "DW100", CodeHash: h, CreatedAt: t0, IssuedBy: issuedBy}}); err != nil {
		t.Fatalf("PutClaimCodes = %v", err)
	}
	return h
}

func testClaimOnceAndHandOver(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	a := mustOwner(t, s, "Ann@Example.com")
	b := mustOwner(t, s, "bob@example.com")
	if a.Email != "ann@example.com" {
		t.Errorf("email stored as %q, want lower case", a.Email)
	}
	if _, err := s.CreateOwner(ctx, cloudstore.NewOwner{Email: "ANN@example.com", Name: "x", PasswordHash: fakeHash, CreatedAt: t0}); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("a second account for the same address = %v, want ErrConflict", err)
	}
	if err := s.RecordSale(ctx, cloudstore.Sale{Device: devA, Product: "DW100", SoldAt: t0.AddDate(0, -3, 0), Shop: "seattle-north", RecordedAt: t0}); err != nil {
		t.Fatal(err)
	}
	h := mustCode(t, s, devA, 0)
	app, err := s.ClaimAppliance(ctx, a.ID, h, t0)
	if err != nil || app.Device != devA || app.OwnerID != a.ID || app.Shop != "seattle-north" || !app.Since.Equal(t0) {
		t.Fatalf("ClaimAppliance = %+v, %v", app, err)
	}
	// A code works once: not for the same owner again, not for another.
	for _, o := range []int64{a.ID, b.ID} {
		if _, err := s.ClaimAppliance(ctx, o, h, t0.Add(time.Minute)); !errors.Is(err, cloudstore.ErrNotFound) {
			t.Errorf("second claim by owner %d = %v, want ErrNotFound", o, err)
		}
	}
	info, err := s.ApplianceInfo(ctx, devA)
	if err != nil || info.OwnerID != a.ID || info.OwnerEmail != "ann@example.com" || info.OwnerVerified || !info.SoldAt.Equal(t0.AddDate(0, -3, 0)) || info.Shop != "seattle-north" {
		t.Errorf("ApplianceInfo = %+v, %v", info, err)
	}
	if err := s.UpdateAppliance(ctx, b.ID, devA, "mine now", ""); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("another owner's UpdateAppliance = %v, want ErrNotFound", err)
	}
	if err := s.UpdateAppliance(ctx, a.ID, devA, "Kitchen", "tacoma"); err != nil {
		t.Fatal(err)
	}
	// Ann hands it over: she keeps it until Bob claims the new code; then it is his, since then.
	h2 := mustCode(t, s, devA, a.ID)
	if got, _ := s.Appliances(ctx, a.ID); len(got) != 1 {
		t.Errorf("Ann's appliances before the claim = %+v", got)
	}
	if _, err := s.ClaimAppliance(ctx, b.ID, h, t0.Add(time.Hour)); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("claim with the replaced code = %v, want ErrNotFound", err)
	}
	later := t0.Add(2 * time.Hour)
	app, err = s.ClaimAppliance(ctx, b.ID, h2, later)
	if err != nil || app.OwnerID != b.ID || !app.Since.Equal(later) || app.Shop != "tacoma" {
		t.Fatalf("hand-over claim = %+v, %v", app, err)
	}
	if got, _ := s.Appliances(ctx, a.ID); len(got) != 0 {
		t.Errorf("Ann still has %+v after the hand-over", got)
	}
	if got, _ := s.Appliances(ctx, b.ID); len(got) != 1 || got[0].Device != devA {
		t.Errorf("Bob's appliances = %+v", got)
	}
	// Two devices cannot share a code.
	if err := s.PutClaimCodes(ctx, []cloudstore.ClaimCode{{Device: devB, Product: "DW100", CodeHash: h2, CreatedAt: t0}}); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("a code hash of another device = %v, want ErrConflict", err)
	}
	if _, err := s.GetSale(ctx, devB); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("GetSale(unsold) = %v, want ErrNotFound", err)
	}
}

func testOwnersRefuseBadInput(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	for _, n := range []cloudstore.NewOwner{
		{Email: "not an address", Name: "x", PasswordHash: fakeHash, CreatedAt: t0},
		{Email: "Ann <ann@example.com>", Name: "x", PasswordHash: fakeHash, CreatedAt: t0},
		{Email: "ann@localhost", Name: "x", PasswordHash: fakeHash, CreatedAt: t0},
		{Email: strings.Repeat("a", 250) + "@example.com", Name: "x", PasswordHash: fakeHash, CreatedAt: t0},
		{Email: "ann@example.com", Name: "", PasswordHash: fakeHash, CreatedAt: t0},
		{Email: "ann@example.com", Name: "a\x00b", PasswordHash: fakeHash, CreatedAt: t0},
		{Email: "ann@example.com", Name: "x", PasswordHash: "plaintext", CreatedAt: t0},
		{Email: "ann@example.com", Name: "x", PasswordHash: fakeHash},
	} {
		if _, err := s.CreateOwner(ctx, n); !errors.Is(err, cloudstore.ErrInvalid) {
			t.Errorf("CreateOwner(%+v) = %v, want ErrInvalid", n, err)
		}
	}
	for _, sl := range []cloudstore.Sale{
		{Device: "x", Product: "DW100", SoldAt: t0, Shop: "s", RecordedAt: t0},
		{Device: devA, Product: "DW100", SoldAt: t0.AddDate(0, 0, 2), Shop: "s", RecordedAt: t0},
		{Device: devA, Product: "DW100", SoldAt: t0, Shop: "Bad Shop", RecordedAt: t0},
	} {
		if err := s.RecordSale(ctx, sl); !errors.Is(err, cloudstore.ErrInvalid) {
			t.Errorf("RecordSale(%+v) = %v, want ErrInvalid", sl, err)
		}
	}
	if _, err := s.ClaimAppliance(ctx, 1, "nothex", t0); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("ClaimAppliance(bad hash) = %v", err)
	}
	if n, _ := s.Appliances(ctx, 1); len(n) != 0 {
		t.Error("bad input stored something")
	}
	if _, err := s.OwnerByEmail(ctx, "ann@example.com"); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("a refused owner was stored: %v", err)
	}
}

func testServiceRequests(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	o := mustOwner(t, s, "ann@example.com")
	r, err := s.CreateServiceRequest(ctx, cloudstore.NewServiceRequest{Device: devA, OwnerID: o.ID, Source: cloudstore.SourceOwner,
		Description: "Dishes stay wet.\nPlease come in the morning.", Preferred: t0.Add(48 * time.Hour), CreatedAt: t0})
	if err != nil || r.State != cloudstore.RequestOpen || r.OwnerID != o.ID || !r.Preferred.Equal(t0.Add(48*time.Hour)) {
		t.Fatalf("CreateServiceRequest = %+v, %v", r, err)
	}
	a, err := s.OpenAlert(ctx, cloudstore.NewAlert{Product: "DW100", Device: devA, Rule: "heater", Severity: "warning", OpenedAt: t0, Message: "cool"})
	if err != nil {
		t.Fatal(err)
	}
	nr := cloudstore.NewServiceRequest{Device: devA, AlertID: a.ID, Source: cloudstore.SourceRule, Description: "heater", CreatedAt: t0}
	if _, err := s.CreateServiceRequest(ctx, nr); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateServiceRequest(ctx, nr); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("second request for one alert = %v, want ErrConflict", err)
	}
	for _, bad := range []cloudstore.NewServiceRequest{
		{Device: devA, Source: "hacker", Description: "x", CreatedAt: t0},
		{Device: devA, Source: cloudstore.SourceOwner, Description: " ", CreatedAt: t0},
		{Device: devA, Source: cloudstore.SourceOwner, Description: strings.Repeat("x", 2001), CreatedAt: t0},
		{Device: devA, Source: cloudstore.SourceOwner, Description: "x", Preferred: t0.AddDate(2, 0, 0), CreatedAt: t0},
	} {
		if _, err := s.CreateServiceRequest(ctx, bad); !errors.Is(err, cloudstore.ErrInvalid) {
			t.Errorf("CreateServiceRequest(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	list, err := s.ListServiceRequests(ctx, cloudstore.ServiceRequestFilter{Device: devA})
	if err != nil || len(list) != 2 || list[0].Source != cloudstore.SourceRule {
		t.Fatalf("ListServiceRequests = %+v, %v", list, err)
	}
	if mine, _ := s.ListServiceRequests(ctx, cloudstore.ServiceRequestFilter{OwnerID: o.ID}); len(mine) != 1 || mine[0].ID != r.ID {
		t.Errorf("owner's requests = %+v", mine)
	}
	up, err := s.UpdateServiceRequest(ctx, r.ID, cloudstore.RequestScheduled, "Tuesday 9:00", t0.Add(time.Hour))
	if err != nil || up.State != cloudstore.RequestScheduled || up.Note != "Tuesday 9:00" {
		t.Fatalf("UpdateServiceRequest = %+v, %v", up, err)
	}
	if _, err := s.UpdateServiceRequest(ctx, r.ID, cloudstore.RequestDone, "", t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateServiceRequest(ctx, r.ID, cloudstore.RequestOpen, "", t0.Add(3*time.Hour)); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("reopening a done request = %v, want ErrConflict", err)
	}
	if _, err := s.UpdateServiceRequest(ctx, 999999, cloudstore.RequestDone, "", t0); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("unknown request = %v, want ErrNotFound", err)
	}
}

func testReservationsAndPrompts(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	a, err := s.OpenAlert(ctx, cloudstore.NewAlert{Product: "DW100", Device: devA, Rule: "rinse", Severity: "info", OpenedAt: t0, Message: "low"})
	if err != nil {
		t.Fatal(err)
	}
	r := cloudstore.Reservation{Device: devA, AlertID: a.ID, Part: "HTR-100", Shop: "seattle-north", State: cloudstore.ReservationReserved, Reference: "R-1", CreatedAt: t0}
	if _, err := s.RecordReservation(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordReservation(ctx, r); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("second reservation for one alert = %v, want ErrConflict", err)
	}
	if got, _ := s.ListReservations(ctx, cloudstore.ReservationFilter{Device: devA}); len(got) != 1 || got[0].Reference != "R-1" {
		t.Errorf("ListReservations = %+v", got)
	}
	p := cloudstore.Prompt{Device: devA, AlertID: a.ID, Consumable: "rinse-agent", BuyURL: "https://shop.example/rinse", CreatedAt: t0}
	p1, err := s.CreatePrompt(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePrompt(ctx, p); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("second prompt for one episode = %v, want ErrConflict", err)
	}
	if _, err := s.CreatePrompt(ctx, cloudstore.Prompt{Device: devA, Consumable: "rinse-agent", BuyURL: "javascript:alert(1)", CreatedAt: t0}); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("a javascript: buy link = %v, want ErrInvalid", err)
	}
	if err := s.DismissPrompt(ctx, devB, p1.ID, t0); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("dismissing another device's prompt = %v, want ErrNotFound", err)
	}
	if err := s.DismissPrompt(ctx, devA, p1.ID, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if open, _ := s.ListPrompts(ctx, cloudstore.PromptFilter{Device: devA, Open: true}); len(open) != 0 {
		t.Errorf("open prompts after dismissal = %+v", open)
	}
}

func testAlertEnqueuesItsActions(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	item := cloudstore.OutboxItem{Kind: "notify", Key: "notify:DW100:" + devA[:8] + ":heater:1", Device: devA, Payload: json.RawMessage(`{"x":1}`)}
	na := cloudstore.NewAlert{Product: "DW100", Device: devA, Rule: "heater", Severity: "warning", OpenedAt: t0, Message: "cool", Outbox: []cloudstore.OutboxItem{item}}
	if _, err := s.OpenAlert(ctx, na); err != nil {
		t.Fatal(err)
	}
	// An invalid item refuses the whole alert: the alert never exists without its actions.
	bad := na
	bad.Device, bad.Rule = devB, "other"
	bad.Outbox = []cloudstore.OutboxItem{{Kind: "notify", Key: "k2", Payload: json.RawMessage(`[1]`)}}
	if _, err := s.OpenAlert(ctx, bad); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("alert with a bad outbox item = %v, want ErrInvalid", err)
	}
	if got, _, _ := s.ListAlerts(ctx, cloudstore.AlertFilter{Device: devB}); len(got) != 0 {
		t.Errorf("the refused alert was stored: %+v", got)
	}
	// Enqueueing a key again is a no-op.
	if err := s.EnqueueOutbox(ctx, t0, item); err != nil {
		t.Errorf("EnqueueOutbox(same key) = %v, want nil", err)
	}
}
