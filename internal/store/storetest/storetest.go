// Package storetest is the one conformance suite for implementations of store.Store. Every
// behavioural test of the store interfaces lives here; store/sqlite and store/postgres each
// call Run with a function that opens an empty database, so both keep the same behaviour
// (SPIRE's sqltest).
//
// The TenantIsolation cases attack rule 3: a TenantTx for tenant B must not reach tenant A's
// products, groups, members, audit events, devices, device CAs, certificates, deployments or
// error reports by any method, nor count them in the fleet queries (CountRunning,
// CountByImage), and A's data must be unchanged afterwards.
//
// Run is called from a test function; its subtests run in parallel, each on its own store.
package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// test is one behavioural case; it gets a harness around a fresh, empty store.
type test struct {
	name string
	fn   func(h *harness)
}

// Run runs every conformance case as a subtest named Aggregate/Case (for -run), each on a
// fresh store from open. open must return an empty database that no other call shares, and
// arrange its closing with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	suites := []struct {
		name  string
		tests []test
	}{
		{"Tenants", tenantTests},
		{"Users", userTests},
		{"Tokens", tokenTests},
		{"Products", productTests},
		{"Groups", groupTests},
		{"MaintenanceWindows", windowTests},
		{"Members", memberTests},
		{"Audit", auditTests},
		{"SigningKeys", signingKeyTests},
		{"TUF", tufTests},
		{"Nonces", nonceTests},
		{"Devices", deviceTests},
		{"DeviceCAs", deviceCATests},
		{"Certificates", certificateTests},
		{"Deployments", deploymentTests},
		{"Rollouts", rolloutTests},
		{"ErrorReports", errorReportTests},
		{"UpdateEvents", updateEventTests},
		{"ErrorIssues", errorIssueTests},
		{"Fleet", fleetTests},
		{"ReportInsights", reportInsightTests},
		{"FleetStatus", fleetStatusTests},
		{"Leases", leaseTests},
		{"Console", consoleTests},
		{"Blobs", blobTests},
		{"TenantIsolation", isolationTests},
		{"Tx", txTests},
		{"ReadTx", readTxTests},
		{"Concurrency", concurrencyTests},
	}
	for _, s := range suites {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range s.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(newHarness(t, open(t)))
				})
			}
		})
	}
}

// harness holds one case's store and a clock that moves forward on every record made.
type harness struct {
	t     *testing.T
	s     store.Store
	clock time.Time
}

// zone is not UTC, so that a store which drops or mangles the zone of a timestamp fails the
// round-trip comparisons; the stores return UTC, and cmp compares time.Time with Equal.
var zone = time.FixedZone("UTC+2", 2*60*60)

func newHarness(t *testing.T, s store.Store) *harness {
	return &harness{t: t, s: s, clock: time.Date(2025, 6, 7, 8, 9, 10, 123456000, zone)}
}

func (h *harness) ctx() context.Context { return h.t.Context() }

// tick returns a later timestamp on every call, at microsecond precision: what both
// databases store exactly.
func (h *harness) tick() time.Time {
	h.clock = h.clock.Add(time.Second + 7*time.Microsecond)
	return h.clock
}

// tx runs fn in its own transaction and returns the error InTx returns. An expected failure
// always gets its own transaction: PostgreSQL aborts a transaction after a failed statement.
func (h *harness) tx(fn func(store.Tx) error) error { return h.s.InTx(h.ctx(), fn) }

// in runs fn on tenant id's data in its own transaction.
func (h *harness) in(id tenant.ID, fn func(store.TenantTx) error) error {
	return h.tx(func(tx store.Tx) error {
		tt, err := tx.ForTenant(id)
		if err != nil {
			return err
		}
		return fn(tt)
	})
}

// must fails the test when fn's transaction fails; call names the operation.
func (h *harness) must(call string, fn func(store.Tx) error) {
	h.t.Helper()
	if err := h.tx(fn); err != nil {
		h.t.Fatalf("%s = %v, want nil", call, err)
	}
}

// mustIn is must on one tenant's data.
func (h *harness) mustIn(call string, id tenant.ID, fn func(store.TenantTx) error) {
	h.t.Helper()
	if err := h.in(id, fn); err != nil {
		h.t.Fatalf("%s in %s = %v, want nil", call, id, err)
	}
}

// read runs a read in its own transaction and returns its result.
func read[T any](h *harness, fn func(ctx context.Context, tx store.Tx) (T, error)) (T, error) {
	var v T
	err := h.tx(func(tx store.Tx) error {
		var err error
		v, err = fn(h.ctx(), tx)
		return err
	})
	return v, err
}

// readIn runs a read of tenant id's data in its own transaction.
func readIn[T any](h *harness, id tenant.ID, fn func(ctx context.Context, tt store.TenantTx) (T, error)) (T, error) {
	var v T
	err := h.in(id, func(tt store.TenantTx) error {
		var err error
		v, err = fn(h.ctx(), tt)
		return err
	})
	return v, err
}

// wantErr reports an error unless errors.Is(err, want).
func wantErr(t *testing.T, call string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s error = %v, want %v", call, err, want)
	}
}

// wantEqual reports a difference between want and got; a read error is fatal.
func wantEqual[T any](t *testing.T, call string, got T, err error, want T) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s error = %v, want nil", call, err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", call, d)
	}
}

// wantEmpty reports a list that is not empty; a read error is fatal.
func wantEmpty[T any](t *testing.T, call string, got []T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s error = %v, want nil", call, err)
	}
	if len(got) != 0 {
		t.Errorf("%s = %d items, want none: %v", call, len(got), got)
	}
}

// checkList checks a list method against want, which is sorted by ID: the whole list, pages
// of two followed by After until an empty page, and a page after the last item.
func checkList[T any](h *harness, call string, want []T, id func(T) string, list func(store.Page) ([]T, error)) {
	h.t.Helper()
	got, err := list(store.Page{})
	wantEqual(h.t, call+"(Page{})", got, err, want)

	var all []T
	after := ""
	for range len(want) + 2 {
		p := store.Page{After: after, Limit: 2}
		page, err := list(p)
		if err != nil {
			h.t.Fatalf("%s(%+v) error = %v, want nil", call, p, err)
		}
		if len(page) > 2 {
			h.t.Fatalf("%s(%+v) = %d items, want at most 2", call, p, len(page))
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		after = id(page[len(page)-1])
	}
	wantEqual(h.t, call+" pages of 2", all, nil, want)

	if len(want) > 0 {
		p := store.Page{After: id(want[len(want)-1])}
		got, err := list(p)
		wantEmpty(h.t, call+"(Page{After: last})", got, err)
	}
}

// ids returns n identifiers with the prefix, in ascending order; cases create records in
// the reverse order, so a list that returned insertion order would fail.
func (h *harness) ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = ident.New(prefix, h.tick())
	}
	return out
}

// userPrefix starts user IDs (auth has no constant for it).
const userPrefix = "usr"

func (h *harness) newTenant(name string) tenant.Tenant {
	at := h.tick()
	return tenant.Tenant{ID: tenant.ID(ident.New(tenant.IDPrefix, at)), Name: name, CreatedAt: at, UpdatedAt: at, Version: 1}
}

func (h *harness) newUser(name string, operator bool) auth.User {
	at := h.tick()
	return auth.User{ID: auth.UserID(ident.New(userPrefix, at)), Name: name, PlatformOperator: operator, CreatedAt: at}
}

func (h *harness) newProduct(tid tenant.ID, name string) product.Product {
	at := h.tick()
	return product.Product{
		ID: product.ID(ident.New(product.IDPrefix, at)), TenantID: tid, Name: name,
		Description: "The " + name + " product.", CreatedAt: at, UpdatedAt: at, Version: 1,
	}
}

func (h *harness) newGroup(tid tenant.ID, pid product.ID, name string) product.Group {
	at := h.tick()
	return product.Group{
		ID: product.GroupID(ident.New(product.GroupIDPrefix, at)), TenantID: tid, ProductID: pid, Name: name,
		Description: "Devices in " + name + ".", OSFeed: product.Retail, UpdatePolicy: product.UpdateAll,
		CreatedAt: at, UpdatedAt: at, Version: 1,
	}
}

func (h *harness) newEvent(tid tenant.ID, action string) audit.Event {
	at := h.tick()
	return audit.Event{
		ID: ident.New(audit.IDPrefix, at), TenantID: tid, At: at,
		ActorID: "usr_0123", ActorName: "alice", TokenID: "tok_4567",
		Action: action, ObjectType: "product", ObjectID: "prd_89ab",
		RemoteAddr: "192.0.2.7:41000", RequestID: "req-1", Detail: "did " + action,
	}
}

// tenant creates a tenant in its own transaction.
func (h *harness) tenant(name string) tenant.Tenant {
	h.t.Helper()
	x := h.newTenant(name)
	h.must("Tenants().Create("+name+")", func(tx store.Tx) error { return tx.Tenants().Create(h.ctx(), x) })
	return x
}

// user creates a user in its own transaction.
func (h *harness) user(name string, operator bool) auth.User {
	h.t.Helper()
	u := h.newUser(name, operator)
	h.must("Users().Create("+name+")", func(tx store.Tx) error { return tx.Users().Create(h.ctx(), u) })
	return u
}

// product creates a product in its own transaction.
func (h *harness) product(tid tenant.ID, name string) product.Product {
	h.t.Helper()
	p := h.newProduct(tid, name)
	h.mustIn("Products().Create("+name+")", tid, func(tt store.TenantTx) error { return tt.Products().Create(h.ctx(), p) })
	return p
}

// group creates a device group in its own transaction.
func (h *harness) group(tid tenant.ID, pid product.ID, name string) product.Group {
	h.t.Helper()
	g := h.newGroup(tid, pid, name)
	h.mustIn("Groups().Create("+name+")", tid, func(tt store.TenantTx) error { return tt.Groups().Create(h.ctx(), g) })
	return g
}

// member grants a role in its own transaction.
func (h *harness) member(tid tenant.ID, u auth.User, role auth.Role) auth.Member {
	h.t.Helper()
	h.mustIn("Members().Put("+string(u.ID)+")", tid, func(tt store.TenantTx) error {
		return tt.Members().Put(h.ctx(), u.ID, role, h.tick())
	})
	return auth.Member{TenantID: tid, User: u, Role: role}
}

// event appends an audit event in its own transaction.
func (h *harness) event(tid tenant.ID, action string) audit.Event {
	h.t.Helper()
	e := h.newEvent(tid, action)
	h.mustIn("Audit().Append("+action+")", tid, func(tt store.TenantTx) error { return tt.Audit().Append(h.ctx(), e) })
	return e
}

// getProduct reads a product of tenant tid.
func (h *harness) getProduct(tid tenant.ID, id product.ID) (product.Product, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (product.Product, error) {
		return tt.Products().Get(ctx, id)
	})
}

// getGroup reads a device group of tenant tid.
func (h *harness) getGroup(tid tenant.ID, pid product.ID, id product.GroupID) (product.Group, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (product.Group, error) {
		return tt.Groups().Get(ctx, pid, id)
	})
}
