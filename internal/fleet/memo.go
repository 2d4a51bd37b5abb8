package fleet

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/tenant"
)

// The group's and the tenant's share of the assignment inputs, read once for many devices
// (issue 15). A deployment wakes every waiting device of the group at once: each re-reads
// its generation, then asks for its assignment, and both need the group, its product, its
// current deployment and the tenant's catalog, the same for all of them. Without this the
// fleet's update after a deployment cost five store reads per device, and the waiting
// fleet's periodic re-checks (updates.go) as many again, which starved PostgreSQL's pool
// with 10,000 devices.
//
// An entry is used while no change event for its tenant (Notify, WakeLocal) or for every
// tenant (WakeAllLocal) has been heard of since it was read (the epoch taken before the
// read, as for the assignment cache), and for inputsMemoMaxAge at most: a change whose
// event was lost (another replica's, before its NOTIFY went out) reaches the update path
// within that, and a waiting device's periodic re-check (every 15 s) always reads anew.
// Attestation does not use it: it reads the catalog on every call, so that a revocation
// through any replica refuses at once (internal/repo, Catalog).
//
// Concurrent misses of one key share one read (singleflight): a deployment wakes thousands
// of devices within two seconds, and on a loaded machine hundreds of them missed together
// while the first read ran. A caller that joins a read uses its result only when no change
// event came after the read's epoch, as for an entry; else it reads on its own.
//
// Entries are handed out by value (the deployment copied), bounded (maxMemoEntries per
// map; past it the map starts anew) and safe for concurrent use.

// inputsMemoMaxAge bounds how long the group's and tenant's inputs are reused.
const inputsMemoMaxAge = 2 * time.Second

// maxMemoEntries bounds the groups, and the tenants, whose inputs a replica reuses.
const maxMemoEntries = 1 << 12

type groupKey struct {
	tenant  tenant.ID
	product product.ID
	group   product.GroupID
}

// groupShare is what a group contributes to its devices' inputs.
type groupShare struct {
	product product.Product
	group   product.Group
	dep     *device.Deployment // nil without a current deployment
}

type memoEntry[T any] struct {
	v     T
	epoch uint64
	at    time.Time
}

type inputsMemo struct {
	epochs  *assignmentCache
	flights singleflight.Group // reads in flight, by key (groupFlight, catalogFlight)

	mu       sync.Mutex
	groups   map[groupKey]memoEntry[groupShare]
	catalogs map[tenant.ID]memoEntry[*repo.Catalog]
}

func newInputsMemo(epochs *assignmentCache) *inputsMemo {
	return &inputsMemo{epochs: epochs, groups: map[groupKey]memoEntry[groupShare]{}, catalogs: map[tenant.ID]memoEntry[*repo.Catalog]{}}
}

// fresh reports whether an entry of tenant t read after epoch at is still usable at now.
func (m *inputsMemo) fresh(t tenant.ID, epoch uint64, at, now time.Time) bool {
	age := now.Sub(at)
	return age >= 0 && age < inputsMemoMaxAge && !m.epochs.ended(epoch, t, "")
}

func (m *inputsMemo) group(k groupKey, now time.Time) (groupShare, bool) {
	m.mu.Lock()
	e, ok := m.groups[k]
	m.mu.Unlock()
	if !ok || !m.fresh(k.tenant, e.epoch, e.at, now) {
		return groupShare{}, false
	}
	g := e.v
	if g.dep != nil {
		d := *g.dep // each caller gets its own copy
		g.dep = &d
	}
	return g, true
}

func (m *inputsMemo) putGroup(k groupKey, g groupShare, epoch uint64, now time.Time) {
	if g.dep != nil {
		d := *g.dep
		g.dep = &d
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.groups[k]; !ok && len(m.groups) >= maxMemoEntries {
		clear(m.groups)
	}
	m.groups[k] = memoEntry[groupShare]{v: g, epoch: epoch, at: now}
}

func (m *inputsMemo) catalog(t tenant.ID, now time.Time) (*repo.Catalog, bool) {
	m.mu.Lock()
	e, ok := m.catalogs[t]
	m.mu.Unlock()
	if !ok || !m.fresh(t, e.epoch, e.at, now) {
		return nil, false
	}
	return e.v, true
}

func (m *inputsMemo) putCatalog(t tenant.ID, c *repo.Catalog, epoch uint64, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.catalogs[t]; !ok && len(m.catalogs) >= maxMemoEntries {
		clear(m.catalogs)
	}
	m.catalogs[t] = memoEntry[*repo.Catalog]{v: c, epoch: epoch, at: now}
}

// read is one read's result with the epoch taken before it.
type read[T any] struct {
	v     T
	epoch uint64
}

// shared runs fn once for the concurrent callers of key (memo's flights) and returns its
// result when no change event for tenant t came after its epoch; ok is false when the
// caller must read on its own (the shared read failed, is stale, or ctx ended the wait).
func shared[T any](ctx context.Context, m *inputsMemo, key string, t tenant.ID, fn func() (read[T], error)) (T, bool) {
	ch := m.flights.DoChan(key, func() (any, error) { return fn() })
	var zero T
	select {
	case res := <-ch:
		r, ok := res.Val.(read[T])
		if res.Err != nil || !ok || m.epochs.ended(r.epoch, t, "") {
			return zero, false
		}
		return r.v, true
	case <-ctx.Done():
		return zero, false
	}
}

// catalogFor is the tenant's catalog for the update path: with memo, reused from the memo
// or read once for concurrent callers; else read (repo.Service.Catalog). Kept either way.
func (s *Service) catalogFor(ctx context.Context, t tenant.ID, memo bool) (*repo.Catalog, error) {
	now := s.cfg.Now()
	if c, ok := s.memo.catalog(t, now); memo && ok {
		return c, nil
	}
	readCatalog := func() (read[*repo.Catalog], error) {
		epoch := s.cache.epoch() // before the read: a change meanwhile keeps it out of the memo
		c, err := s.cfg.Repo.Catalog(ctx, t)
		if err != nil {
			return read[*repo.Catalog]{}, err
		}
		s.memo.putCatalog(t, c, epoch, now)
		return read[*repo.Catalog]{v: c, epoch: epoch}, nil
	}
	if memo {
		if c, ok := shared(ctx, s.memo, "catalog/"+string(t), t, readCatalog); ok {
			return c, nil
		}
	}
	r, err := readCatalog()
	return r.v, err
}
