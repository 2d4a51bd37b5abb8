package fleet

import (
	"container/list"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/tenant"
)

// Device authentication without a store read for an unchanged device (issue 15): the
// device row authentication read for a device's current certificate is kept, and the
// device's next requests on this replica are authenticated from it while nothing may have
// changed it. An update check that is answered 304 then touches no store at all.
//
// What ends an entry, so that blocking a device, moving it, re-attesting it or revoking
// its certificate takes effect on its next request (DESIGN rule 3):
//
//   - a change to the device row through this replica: attestation (attest.go, on every
//     outcome, before its answer), a change through the management API (its Notify ends
//     the tenant's entries before the API answers); a change through another replica
//     arrives as DeviceChangedLocal or WakeLocal (Config.BroadcastDevice, Config.Broadcast:
//     PostgreSQL NOTIFY), and WakeAllLocal or DevicesChangedAllLocal end every entry when
//     events may have been lost (the LISTEN connection dropped). The epoch is taken before
//     the row is read, so a change committed while it was read ends the entry too
//     (TestDeviceCache_*; across replicas TestReplicas_BlockStopsDeviceOnEveryReplica);
//   - a certificate other than the one the row names as current: only the device's current
//     certificate is served from an entry, so a superseded one (a clone's, ATTACKS row 1)
//     is read from the store every time and refused there;
//   - age: an entry is used for DeviceCacheMaxAge at most, a bound on a change whose event
//     was lost that is no longer than the token cache's (internal/api/mgmt).
//
// The cache is bounded (DefaultDeviceCacheEntries, least recently used out) and its
// device epochs too (maxEpochDevices, past which every entry ends); safe for concurrent
// use (its own mutex, then the assignment cache's for the epochs, never the other way).

// DeviceCacheMaxAge bounds how long a device row read for authentication is reused.
const DeviceCacheMaxAge = 5 * time.Second

// DefaultDeviceCacheEntries bounds the devices whose rows a replica keeps (a row is about
// 1.5 KB: 64 MB at the bound, for a replica that serves that many devices at once).
const DefaultDeviceCacheEntries = 1 << 16

type devEntry struct {
	key    cacheKey
	dev    device.Device // handed out by value; only seen replaces its LastSeenAt pointer
	epoch  uint64        // the epoch before the row was read
	readAt time.Time
}

type deviceCache struct {
	max    int
	epochs *assignmentCache // whose change events end entries

	mu sync.Mutex
	ll *list.List // of *devEntry, most recent first
	m  map[cacheKey]*list.Element
}

func newDeviceCache(max int, epochs *assignmentCache) *deviceCache {
	return &deviceCache{max: max, epochs: epochs, ll: list.New(), m: map[cacheKey]*list.Element{}}
}

// get returns the device's cached row when it is still current for a request with the
// certificate serial, at now.
func (c *deviceCache) get(t tenant.ID, id device.ID, serial string, now time.Time) (device.Device, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[cacheKey{t, id}]
	if !ok {
		return device.Device{}, false
	}
	e := el.Value.(*devEntry)
	age := now.Sub(e.readAt)
	if age < 0 || age >= DeviceCacheMaxAge || c.epochs.ended(e.epoch, t, id) {
		c.ll.Remove(el)
		delete(c.m, e.key)
		return device.Device{}, false
	}
	if e.dev.Certificate == nil || e.dev.Certificate.Serial != serial {
		return device.Device{}, false
	}
	c.ll.MoveToFront(el)
	return e.dev, true
}

// put keeps dev, read after epoch was taken at now, for requests with its current
// certificate. A blocked device, or one without a current certificate, is not kept: it is
// refused, and a refusal reads the store every time.
func (c *deviceCache) put(dev device.Device, epoch uint64, now time.Time) {
	if c.max <= 0 || dev.Blocked || dev.Certificate == nil || dev.TenantID == "" {
		return
	}
	k := cacheKey{dev.TenantID, dev.ID}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epochs.ended(epoch, dev.TenantID, dev.ID) {
		return // changed while it was read
	}
	if el, ok := c.m[k]; ok {
		c.ll.Remove(el)
	}
	c.m[k] = c.ll.PushFront(&devEntry{key: k, dev: dev, epoch: epoch, readAt: now})
	// Past the bound the least recently used goes; so does one that expired, which would
	// only hold its row (a fleet that waits for updates reads rows every 15 s that live 5).
	for last := c.ll.Back(); last != nil; last = c.ll.Back() {
		if c.ll.Len() <= c.max && now.Sub(last.Value.(*devEntry).readAt) < DeviceCacheMaxAge {
			break
		}
		c.ll.Remove(last)
		delete(c.m, last.Value.(*devEntry).key)
	}
}

// seen records in the device's entry that its last contact was written at.
func (c *deviceCache) seen(t tenant.ID, id device.ID, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[cacheKey{t, id}]; ok {
		e := el.Value.(*devEntry)
		e.dev.LastSeenAt = &at
	}
}

func (c *deviceCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
