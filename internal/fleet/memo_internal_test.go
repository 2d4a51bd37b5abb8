package fleet

import (
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/tenant"
)

// TestInputsMemo_EndsOnTenantChangeAndAfterMaxAge: a group's and a tenant's inputs are
// reused only while no change event for the tenant or every tenant came after their read
// (a read across one is not kept) and for less than inputsMemoMaxAge; another tenant's
// or a device's event leaves them.
func TestInputsMemo_EndsOnTenantChangeAndAfterMaxAge(t *testing.T) {
	t.Parallel()
	now := time.Now()
	k := groupKey{tenant: "t1", product: "p", group: "g"}
	cat := &repo.Catalog{}
	for _, ev := range []struct {
		name string
		end  bool
		do   func(*assignmentCache)
	}{
		{"another tenant's change", false, func(c *assignmentCache) { c.changed("t2") }},
		{"a device's change", false, func(c *assignmentCache) { c.changedDevice("d1") }},
		{"the tenant's change", true, func(c *assignmentCache) { c.changed("t1") }},
		{"every tenant's change", true, func(c *assignmentCache) { c.changedAll() }},
	} {
		epochs := newAssignmentCache(10)
		m := newInputsMemo(epochs)
		m.putGroup(k, groupShare{group: product.Group{ID: "g"}}, epochs.epoch(), now)
		m.putCatalog("t1", cat, epochs.epoch(), now)
		ev.do(epochs)
		if _, ok := m.group(k, now); ok == ev.end {
			t.Errorf("group after %s: reused %t, want %t", ev.name, ok, !ev.end)
		}
		if _, ok := m.catalog("t1", now); ok == ev.end {
			t.Errorf("catalog after %s: reused %t, want %t", ev.name, ok, !ev.end)
		}
	}

	epochs := newAssignmentCache(10)
	m := newInputsMemo(epochs)
	before := epochs.epoch()
	epochs.changed("t1")
	m.putGroup(k, groupShare{}, before, now)
	m.putCatalog("t1", cat, before, now)
	if _, ok := m.group(k, now); ok {
		t.Error("a group read across its tenant's change is reused")
	}
	if _, ok := m.catalog("t1", now); ok {
		t.Error("a catalog read across its tenant's change is reused")
	}

	m.putGroup(k, groupShare{}, epochs.epoch(), now)
	m.putCatalog("t1", cat, epochs.epoch(), now)
	if _, ok := m.group(k, now.Add(inputsMemoMaxAge-time.Millisecond)); !ok {
		t.Error("a group read just now is not reused")
	}
	for _, at := range []time.Time{now.Add(inputsMemoMaxAge), now.Add(-time.Second)} {
		if _, ok := m.group(k, at); ok {
			t.Errorf("a group read at %s is reused at %s", now.Format(time.StampMilli), at.Format(time.StampMilli))
		}
		if _, ok := m.catalog("t1", at); ok {
			t.Errorf("a catalog read at %s is reused at %s", now.Format(time.StampMilli), at.Format(time.StampMilli))
		}
	}
}

// TestInputsMemo_IsBoundedAndCopiesTheDeployment: at most maxMemoEntries groups and
// tenants; and a caller that changes the deployment it was handed changes nobody else's.
func TestInputsMemo_IsBoundedAndCopiesTheDeployment(t *testing.T) {
	t.Parallel()
	now := time.Now()
	epochs := newAssignmentCache(10)
	m := newInputsMemo(epochs)
	for i := range maxMemoEntries + 5 {
		ten := tenant.ID(fmt.Sprint("t", i))
		m.putGroup(groupKey{tenant: ten}, groupShare{}, epochs.epoch(), now)
		m.putCatalog(ten, &repo.Catalog{}, epochs.epoch(), now)
		if len(m.groups) > maxMemoEntries || len(m.catalogs) > maxMemoEntries {
			t.Fatalf("%d groups, %d catalogs kept; bound %d", len(m.groups), len(m.catalogs), maxMemoEntries)
		}
	}
	k := groupKey{tenant: "t1", product: "p", group: "g"}
	m.putGroup(k, groupShare{dep: &device.Deployment{ID: "dep1"}}, epochs.epoch(), now)
	g, _ := m.group(k, now)
	g.dep.ID = "changed"
	if g2, ok := m.group(k, now); !ok || g2.dep.ID != "dep1" {
		t.Errorf("deployment handed out next = %+v (reused %t), want dep1", g2.dep, ok)
	}
}

// TestInputsMemo_ConcurrentMissesShareOneRead: callers that miss together wait for one
// read instead of each reading (a woken group's thundering herd); a read that a change
// event overtook is not used by anyone, so each reads on its own.
func TestInputsMemo_ConcurrentMissesShareOneRead(t *testing.T) {
	t.Parallel()
	for _, overtaken := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			epochs := newAssignmentCache(10)
			m := newInputsMemo(epochs)
			var reads atomic.Int32
			release := make(chan struct{})
			fn := func() (read[int], error) {
				epoch := epochs.epoch()
				reads.Add(1)
				<-release
				return read[int]{v: 7, epoch: epoch}, nil
			}
			const n = 50
			results := make(chan bool, n)
			for range n {
				go func() { v, ok := shared(t.Context(), m, "k", "t1", fn); results <- ok && v == 7 }()
			}
			synctest.Wait() // every caller is waiting: one in the read, the others for it
			if overtaken {
				epochs.changed("t1")
			}
			close(release)
			used := 0
			for range n {
				if <-results {
					used++
				}
			}
			if r := reads.Load(); r != 1 {
				t.Errorf("overtaken %t: %d reads for %d concurrent misses, want 1", overtaken, r, n)
			}
			if want := map[bool]int{false: n, true: 0}[overtaken]; used != want {
				t.Errorf("overtaken %t: %d callers used the shared read, want %d", overtaken, used, want)
			}
		})
	}
}
