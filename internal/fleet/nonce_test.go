package fleet_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/blob/fsblob"
	"github.com/moat-iot/moat/internal/device"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// countingStore is a store.Store that logs every transaction it opens and every part of
// the store a transaction reaches, so a test can compare the store work of two calls
// without timing them.
type countingStore struct {
	store.Store
	mu  sync.Mutex
	ops []string
}

func (c *countingStore) note(op string) {
	c.mu.Lock()
	c.ops = append(c.ops, op)
	c.mu.Unlock()
}

// take returns the operations logged since the last take.
func (c *countingStore) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ops := c.ops
	c.ops = nil
	return ops
}

func (c *countingStore) InTx(ctx context.Context, fn func(store.Tx) error) error {
	c.note("InTx")
	return c.Store.InTx(ctx, func(tx store.Tx) error { return fn(countingTx{tx, c}) })
}

func (c *countingStore) InReadTx(ctx context.Context, fn func(store.Tx) error) error {
	c.note("InReadTx")
	return c.Store.InReadTx(ctx, func(tx store.Tx) error { return fn(countingTx{tx, c}) })
}

// countingTx logs each aggregate a transaction reaches.
type countingTx struct {
	store.Tx
	c *countingStore
}

func (t countingTx) Tenants() store.Tenants { t.c.note("Tenants"); return t.Tx.Tenants() }
func (t countingTx) Users() store.Users     { t.c.note("Users"); return t.Tx.Users() }
func (t countingTx) Tokens() store.Tokens   { t.c.note("Tokens"); return t.Tx.Tokens() }
func (t countingTx) PlatformRoots() store.PlatformRoots {
	t.c.note("PlatformRoots")
	return t.Tx.PlatformRoots()
}
func (t countingTx) PlatformAudit() store.AuditLog {
	t.c.note("PlatformAudit")
	return t.Tx.PlatformAudit()
}
func (t countingTx) Nonces() store.Nonces         { t.c.note("Nonces"); return t.Tx.Nonces() }
func (t countingTx) Devices() store.Devices       { t.c.note("Devices"); return t.Tx.Devices() }
func (t countingTx) PlatformCA() store.PlatformCA { t.c.note("PlatformCA"); return t.Tx.PlatformCA() }
func (t countingTx) ForTenant(id tenant.ID) (store.TenantTx, error) {
	t.c.note("ForTenant")
	return t.Tx.ForTenant(id)
}

func (t countingTx) PendingCAs(ctx context.Context) ([]device.CA, error) {
	t.c.note("PendingCAs")
	return t.Tx.PendingCAs(ctx)
}

// replica builds a second fleet service over st with the given key-encryption key, as
// another server replica would run it.
func replica(t *testing.T, st store.Store, kek []byte) *fleetsvc.Service {
	t.Helper()
	online, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := fsblob.Open(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repo.New(st, blobs, online, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := fleetsvc.New(fleetsvc.Config{Store: st, Repo: rp, Logger: slog.New(slog.DiscardHandler), Now: time.Now,
		KEK: kek, Director: online, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func randomKEK(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func unknownID(t *testing.T) device.ID {
	t.Helper()
	k, err := identity.CreateFileKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	return device.ID(k.ID())
}

// storedNonces counts the attestation nonce rows (by deleting them all).
func storedNonces(t *testing.T, st store.Store) int64 {
	t.Helper()
	var n int64
	err := st.InTx(t.Context(), func(tx store.Tx) error {
		var err error
		n, err = tx.Nonces().DeleteExpired(t.Context(), time.Now().Add(24*time.Hour))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNonce_FloodOfOneDeviceStoresNothing attacks defect 6 of issue 10: anyone who knows a
// registered device ID asked for nonces without limit and each one was a row.
func TestNonce_FloodOfOneDeviceStoresNothing(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	d := p.NewDevice(true, "")
	st := p.Server.Store()
	before := storedNonces(t, st)
	for range 500 {
		if _, err := p.Server.Fleet().NewNonce(t.Context(), device.ID(d.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if n := storedNonces(t, st); n != before {
		t.Errorf("500 nonces for one registered device left %d rows, want %d (nonces cost no storage)", n, before)
	}
}

// TestNonce_RegisteredAndUnknownDoTheSameStoreWork attacks the timing oracle of defect 6:
// a registered ID took a write and a read more than an unknown one. Counted, not timed.
func TestNonce_RegisteredAndUnknownDoTheSameStoreWork(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	d := p.NewDevice(true, "")
	cs := &countingStore{Store: p.Server.Store()}
	svc := replica(t, cs, randomKEK(t))
	if _, err := svc.NewNonce(t.Context(), device.ID(d.ID)); err != nil {
		t.Fatal(err)
	}
	registered := cs.take()
	if _, err := svc.NewNonce(t.Context(), unknownID(t)); err != nil {
		t.Fatal(err)
	}
	unknown := cs.take()
	if !slices.Equal(registered, unknown) || len(registered) != 0 {
		t.Errorf("NewNonce store work: registered %v, unknown %v; want the same, and none", registered, unknown)
	}
}

// TestNonce_RateLimitedPerDevice: past the per-device budget the endpoint answers 503 with
// Retry-After, the same for a registered and an unknown ID; other devices are unaffected.
func TestNonce_RateLimitedPerDevice(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	registered := p.NewDevice(true, "")
	ctx := t.Context()
	statuses := func(id string) []int {
		var out []int
		for range fleetsvc.NoncesPerWindow + 1 {
			_, err := p.Anon().CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: id})
			ce, ok := errors.AsType[*client.Error](err)
			switch {
			case err == nil:
				out = append(out, http.StatusCreated)
			case ok:
				out = append(out, ce.Status)
			default:
				t.Fatal(err)
			}
		}
		return out
	}
	got := statuses(registered.ID)
	want := slices.Repeat([]int{http.StatusCreated}, fleetsvc.NoncesPerWindow)
	want = append(want, http.StatusServiceUnavailable)
	if !slices.Equal(got, want) {
		t.Errorf("statuses for a registered ID = %v, want %v", got, want)
	}
	if got := statuses(string(unknownID(t))); !slices.Equal(got, want) {
		t.Errorf("statuses for an unknown ID = %v, want %v (the same as a registered one)", got, want)
	}
	other := p.NewDevice(true, "")
	if _, err := p.Anon().CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: other.ID}); err != nil {
		t.Errorf("another device after the flood: %v, want a nonce", err)
	}

	// The refusal carries Retry-After: the seconds until the window ends.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Server.URL+"/api/v1/device/attestation/nonces",
		strings.NewReader(`{"device_id":"`+registered.ID+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.Server.HTTPClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusServiceUnavailable || err != nil || secs < 1 || secs > int(fleetsvc.NonceWindow/time.Second) {
		t.Errorf("flooded request: status %d, Retry-After %q; want 503 and 1..%d seconds", resp.StatusCode, resp.Header.Get("Retry-After"), int(fleetsvc.NonceWindow/time.Second))
	}
}

// TestNonce_LimiterIsBounded: the per-device budgets are a bounded map; past its bound a new
// ID is turned away until the window ends, and nothing grows.
func TestNonce_LimiterIsBounded(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	svc := replica(t, p.Server.Store(), randomKEK(t))
	var refused int
	for i := range fleetsvc.NonceDevicesPerWindow + 10 {
		id := device.ID(strconv.Itoa(i))
		if err := svc.AdmitNonce(id); err != nil {
			if _, ok := errors.AsType[*fleetsvc.Throttled](err); !ok {
				t.Fatalf("AdmitNonce(%s) = %v, want a *fleetsvc.Throttled", id, err)
			}
			refused++
		}
	}
	if refused != 10 {
		t.Errorf("%d of %d new IDs refused past the bound of %d, want 10", refused, fleetsvc.NonceDevicesPerWindow+10, fleetsvc.NonceDevicesPerWindow)
	}
}

// TestNonce_RejectsNonceNotIssuedByThePlatform: a well-formed nonce the platform never
// issued, or one issued by a server with another secret, is refused and recorded.
func TestNonce_RejectsNonceNotIssuedByThePlatform(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	good := []attest.Measurement{f.os.Measurement(), f.app.Measurement()}
	d := f.NewDevice(true, "DW100/Production")
	ev, err := attest.Sign(d.Key, attest.Evidence{DeviceID: d.ID, Nonce: attest.NewNonce(), Time: time.Now(), Measurements: good})
	if err != nil {
		t.Fatal(err)
	}
	f.refusal(t, "random nonce", ev, d, "stale_or_replayed_nonce", true)

	foreign := replica(t, f.Server.Store(), randomKEK(t))
	n, err := foreign.NewNonce(t.Context(), device.ID(d.ID))
	if err != nil {
		t.Fatal(err)
	}
	ev, err = attest.Sign(d.Key, attest.Evidence{DeviceID: d.ID, Nonce: n.Nonce, Time: time.Now(), Measurements: good})
	if err != nil {
		t.Fatal(err)
	}
	f.refusal(t, "nonce of a server with another secret", ev, d, "stale_or_replayed_nonce", true)
}

// TestNonce_SpentNoncesArePruned: a spent nonce is kept until it expires (so it cannot be
// spent again), then the hourly prune removes it.
func TestNonce_SpentNoncesArePruned(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	st := f.Server.Store()
	if _, err := f.Attest(d, f.os.Measurement(), f.app.Measurement()); err != nil {
		t.Fatal(err)
	}
	var kept, pruned int64
	err := st.InTx(t.Context(), func(tx store.Tx) error {
		var err error
		if kept, err = tx.Nonces().DeleteExpired(t.Context(), time.Now()); err != nil {
			return err
		}
		pruned, err = tx.Nonces().DeleteExpired(t.Context(), time.Now().Add(fleetsvc.NonceTTL+time.Second))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if kept != 0 || pruned != 1 {
		t.Errorf("spent nonce rows deleted before expiry %d, after %d; want 0 and 1", kept, pruned)
	}
}
