package fleet

import (
	"fmt"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/tenant"
)

func cachedDevice(id device.ID, t tenant.ID) device.Device {
	return device.Device{ID: id, TenantID: t, ProductID: "p", GroupID: "g",
		Certificate: &device.Current{Serial: "s1", IssuedAt: time.Now()}}
}

// TestDeviceCache_EndsOnEveryChangeEvent: a kept device row is not served after a change
// event for the device (an attestation), its tenant (Notify, WakeLocal) or every tenant
// (WakeAllLocal, a lost LISTEN connection); another device's or tenant's event leaves it.
func TestDeviceCache_EndsOnEveryChangeEvent(t *testing.T) {
	t.Parallel()
	now := time.Now()
	dev := cachedDevice("d1", "t1")
	for _, ev := range []struct {
		name string
		end  bool
		do   func(*assignmentCache)
	}{
		{"another device's change", false, func(c *assignmentCache) { c.changedDevice("d2") }},
		{"another tenant's change", false, func(c *assignmentCache) { c.changed("t2") }},
		{"the device's change", true, func(c *assignmentCache) { c.changedDevice("d1") }},
		{"the tenant's change", true, func(c *assignmentCache) { c.changed("t1") }},
		{"every tenant's change", true, func(c *assignmentCache) { c.changedAll() }},
	} {
		epochs := newAssignmentCache(10)
		c := newDeviceCache(10, epochs)
		c.put(dev, epochs.epoch(), now)
		if _, ok := c.get("t1", "d1", "s1", now); !ok {
			t.Fatalf("%s: a fresh entry is not served", ev.name)
		}
		ev.do(epochs)
		if _, ok := c.get("t1", "d1", "s1", now); ok == ev.end {
			t.Errorf("after %s: served %t, want %t", ev.name, ok, !ev.end)
		}
	}
}

// TestDeviceCache_ReadAcrossAChangeIsNotKept: a row read while the device changed (the
// epoch taken before the read, the event before the put) is not kept, so a request that
// read the row just before a block cannot leave the unblocked row behind it.
func TestDeviceCache_ReadAcrossAChangeIsNotKept(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for name, change := range map[string]func(*assignmentCache){
		"device": func(c *assignmentCache) { c.changedDevice("d1") },
		"tenant": func(c *assignmentCache) { c.changed("t1") },
		"all":    func(c *assignmentCache) { c.changedAll() },
	} {
		epochs := newAssignmentCache(10)
		c := newDeviceCache(10, epochs)
		before := epochs.epoch()
		change(epochs)
		c.put(cachedDevice("d1", "t1"), before, now)
		if _, ok := c.get("t1", "d1", "s1", now); ok {
			t.Errorf("a row read across a %s change is served", name)
		}
	}
}

// TestDeviceCache_OnlyTheCurrentCertificateAndNeverARefusedDevice: an entry serves only
// requests with the certificate the row names as current (a superseded one, a clone's, is
// read from the store and refused there, ATTACKS row 1); a blocked device, one whose
// certificate a refused attestation ended, or an unclaimed one is never kept.
func TestDeviceCache_OnlyTheCurrentCertificateAndNeverARefusedDevice(t *testing.T) {
	t.Parallel()
	now := time.Now()
	epochs := newAssignmentCache(10)
	c := newDeviceCache(10, epochs)
	c.put(cachedDevice("d1", "t1"), epochs.epoch(), now)
	if _, ok := c.get("t1", "d1", "s0", now); ok {
		t.Error("an entry served a request with another certificate than the current one")
	}
	if _, ok := c.get("t2", "d1", "s1", now); ok {
		t.Error("an entry served a request naming another tenant")
	}
	blocked := cachedDevice("d2", "t1")
	blocked.Blocked = true
	noCert := cachedDevice("d3", "t1")
	noCert.Certificate = nil
	unclaimed := cachedDevice("d4", "")
	for _, d := range []device.Device{blocked, noCert, unclaimed} {
		c.put(d, epochs.epoch(), now)
		if _, ok := c.get(d.TenantID, d.ID, "s1", now); ok {
			t.Errorf("device %s (blocked %t, certificate %v, tenant %q) was kept", d.ID, d.Blocked, d.Certificate, d.TenantID)
		}
	}
}

// TestDeviceCache_EndsAfterMaxAge: without any event (one lost), an entry is served for
// DeviceCacheMaxAge at most; one from the future (a clock step back) is not served.
func TestDeviceCache_EndsAfterMaxAge(t *testing.T) {
	t.Parallel()
	now := time.Now()
	epochs := newAssignmentCache(10)
	c := newDeviceCache(10, epochs)
	c.put(cachedDevice("d1", "t1"), epochs.epoch(), now)
	if _, ok := c.get("t1", "d1", "s1", now.Add(DeviceCacheMaxAge-time.Millisecond)); !ok {
		t.Fatal("an entry younger than DeviceCacheMaxAge is not served")
	}
	if _, ok := c.get("t1", "d1", "s1", now.Add(DeviceCacheMaxAge)); ok {
		t.Error("an entry DeviceCacheMaxAge old is served")
	}
	c.put(cachedDevice("d1", "t1"), epochs.epoch(), now)
	if _, ok := c.get("t1", "d1", "s1", now.Add(-time.Second)); ok {
		t.Error("an entry read after now is served")
	}
	if SupersedeGrace <= DeviceCacheMaxAge {
		// A superseded certificate is told apart from the current one by the store's row
		// only past the grace; an entry must not outlive it.
		t.Errorf("DeviceCacheMaxAge %s is not below SupersedeGrace %s", DeviceCacheMaxAge, SupersedeGrace)
	}
}

// TestDeviceCache_IsBounded: the cache holds at most its bound (least recently used
// out), and the devices whose last change it remembers are at most maxEpochDevices;
// forgetting them ends every entry rather than reviving one a change had ended.
func TestDeviceCache_IsBounded(t *testing.T) {
	t.Parallel()
	now := time.Now()
	epochs := newAssignmentCache(10)
	c := newDeviceCache(3, epochs)
	for i := range 10 {
		c.put(cachedDevice(device.ID(fmt.Sprint(i)), "t1"), epochs.epoch(), now)
		if n := c.len(); n > 3 {
			t.Fatalf("%d entries, bound 3", n)
		}
	}
	if _, ok := c.get("t1", "9", "s1", now); !ok {
		t.Error("the latest entry is not served")
	}

	epochs = newAssignmentCache(10)
	c = newDeviceCache(10, epochs)
	epochs.changedDevice("victim") // its change, before its entry: the entry stands
	c.put(cachedDevice("victim", "t1"), epochs.epoch(), now)
	for i := range maxEpochDevices + 5 {
		epochs.changedDevice(device.ID(fmt.Sprint(i)))
		if n := len(epochs.deviceAt); n > maxEpochDevices {
			t.Fatalf("%d devices' epochs remembered, bound %d", n, maxEpochDevices)
		}
	}
	if _, ok := c.get("t1", "victim", "s1", now); ok {
		t.Error("an entry outlived the forgetting of the devices' epochs")
	}
}

// TestDeviceCache_SeenIsKept: the last contact written for a device is kept in its
// entry, so a device served from the cache does not write it on every request.
func TestDeviceCache_SeenIsKept(t *testing.T) {
	t.Parallel()
	now := time.Now()
	epochs := newAssignmentCache(10)
	c := newDeviceCache(10, epochs)
	d := cachedDevice("d1", "t1")
	old := now.Add(-time.Hour)
	d.LastSeenAt = &old
	c.put(d, epochs.epoch(), now)
	c.seen("t1", "d1", now)
	got, ok := c.get("t1", "d1", "s1", now)
	if !ok || got.LastSeenAt == nil || !got.LastSeenAt.Equal(now) {
		t.Errorf("cached last seen = %v (served %t), want %v", got.LastSeenAt, ok, now)
	}
	if !d.LastSeenAt.Equal(old) {
		t.Error("seen changed a row handed out before")
	}
}

// TestDeviceCache_ExpiredEntriesGo (issue 15, memory per waiting device): an entry past
// DeviceCacheMaxAge is served no more, so it does not stay to hold its row; a put lets the
// expired ones at the back go, well before the bound would.
func TestDeviceCache_ExpiredEntriesGo(t *testing.T) {
	t.Parallel()
	epochs := newAssignmentCache(1000)
	c := newDeviceCache(1000, epochs)
	start := time.Now()
	for i := range 100 {
		c.put(cachedDevice(device.ID(fmt.Sprintf("old%d", i)), "t1"), epochs.epoch(), start)
	}
	later := start.Add(DeviceCacheMaxAge)
	c.put(cachedDevice("new", "t1"), epochs.epoch(), later)
	if n := c.len(); n != 1 {
		t.Errorf("%d entries after 100 expired and one fresh put, want 1", n)
	}
	if _, ok := c.get("t1", "new", "s1", later); !ok {
		t.Error("the fresh entry is not served")
	}
}
