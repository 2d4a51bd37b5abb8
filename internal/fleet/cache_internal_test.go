package fleet

import (
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/tenant"
)

// TestAssignmentCache_EpochsAreBounded: the tenants whose last change the cache remembers
// are at most maxEpochTenants; forgetting them ends every entry rather than reviving one
// a change had ended. WakeAllLocal's changedAll ends every entry too.
func TestAssignmentCache_EpochsAreBounded(t *testing.T) {
	t.Parallel()
	now := time.Now()
	dev := &device.Device{ID: "d1", TenantID: "t-victim", ProductID: "p", GroupID: "g", Floors: map[string]uint32{"os/x": 1}}
	tag := etag{1}
	fill := func(c *assignmentCache) {
		c.put(dev, tag, "gen", c.epoch(), now)
		if !c.current(dev, tag, now) {
			t.Fatal("a fresh entry is not current")
		}
	}

	c := newAssignmentCache(10)
	c.changed(dev.TenantID) // the victim's change, before its entry: the entry stands
	fill(c)
	for i := range maxEpochTenants + 5 {
		c.changed(tenant.ID(fmt.Sprintf("t-%d", i)))
		if n := len(c.tenantAt); n > maxEpochTenants {
			t.Fatalf("%d tenants' epochs remembered, bound %d", n, maxEpochTenants)
		}
	}
	if c.current(dev, tag, now) {
		t.Error("an entry outlived the forgetting of the tenants' epochs")
	}

	c = newAssignmentCache(10)
	fill(c)
	c.changedAll()
	if c.current(dev, tag, now) {
		t.Error("an entry outlived changedAll (WakeAllLocal)")
	}

	// An entry computed while a change happened (the epoch taken before it) is not current.
	c = newAssignmentCache(10)
	before := c.epoch()
	c.changed(dev.TenantID)
	c.put(dev, tag, "gen", before, now)
	if c.current(dev, tag, now) {
		t.Error("an entry whose inputs were read across a change is current")
	}
	// Nor one for a device whose floors or running image differ.
	c = newAssignmentCache(10)
	fill(c)
	raised := *dev
	raised.Floors = map[string]uint32{"os/x": 2}
	if c.current(&raised, tag, now) {
		t.Error("an entry is current for a device whose floor rose")
	}
	fill(c)
	running := *dev
	running.Attestation = &device.Attestation{Images: []device.Measurement{{Kind: "app", Path: "apps/a/2.0.0"}}}
	if c.current(&running, tag, now) {
		t.Error("an entry is current for a device that runs another image")
	}
}

// FuzzParseETag: If-None-Match is a stranger's header; parseETag never panics and accepts
// exactly the form AssignmentETag writes.
func FuzzParseETag(f *testing.F) {
	f.Add(AssignmentETag([]byte("x")))
	f.Add(`W/"00000000000000000000000000000000"`)
	f.Add(`"0123456789abcdef0123456789ABCDEF"`)
	f.Add(`*`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, v string) {
		e, ok := parseETag(v)
		if ok && v != `"`+hex.EncodeToString(e[:])+`"` {
			t.Fatalf("parseETag(%q) accepted a form AssignmentETag does not write", v)
		}
	})
}
