package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/tenant"
)

// Update checks at the TLS limit (issue 15): a device that holds the assignment this
// replica signed for it last, and whose inputs did not change since, is answered "not
// modified" without a store read beyond authentication's and without a signature.
//
// The device names what it holds by its ETag (AssignmentETag: a hash of the signed bytes)
// in If-None-Match; CheckAssignment answers NotModified only when this replica's cache
// holds that same ETag for the device and the entry is still current:
//
//   - no change event reached this replica since the entry's inputs were read: Notify
//     (a change through this replica), WakeLocal (one through another, carried by
//     Config.Broadcast) and WakeAllLocal (events may have been lost) end the entries of
//     the tenant, or of all, by an epoch checked on every hit; the epoch is taken before
//     the inputs are read, so a change committed while they were read ends the entry too
//     (TestAssignmentCache_NotServedAfterDeploymentChange, _AfterGroupChange,
//     _AfterRolloutStageAdvance, _AfterCatalogChange, _AfterChangeOnAnotherReplica);
//   - the device's own inputs, as authentication read them for this request, are those
//     the entry was computed from (its group, blocked state, floors and what it runs):
//     a change to the device needs no event (_AfterBlockedChange, _AfterGroupChange);
//   - the entry is younger than CacheMaxAge, so a change whose event was lost is answered
//     within it at the latest, and a device's assignment never has less than three
//     quarters of its validity left when it is confirmed;
//   - a waiting device's periodic generation re-read (WaitUpdates) drops an entry whose
//     generation differs, so for a long-polling device a lost event costs no more than
//     the wait's re-check interval.
//
// Anything else (no If-None-Match, another ETag, no entry) is answered with an assignment
// signed now, with a new counter, which becomes the entry: a 200 never re-sends cached
// bytes, so a device that alternates between replicas never receives an older counter
// than one it accepted, and an agent that predates the ETag works as before.
//
// Why "not modified" is safe for the device (DESIGN rule 2): the device acts on an
// assignment only after verifying it (internal/agent/update): on 304 it re-verifies the
// bytes it holds, signature, identity and expiry included, so a 304 can only keep the
// device on what it already accepted, until that expires, which a server that stops
// answering could do too. Only a byte-identical copy of the last accepted assignment is
// "unchanged" there; an older one is still refused as replayed
// (TestUpdate_ResentAssignmentIsUnchangedOlderIsReplayed).
//
// The cache is bounded (Config.AssignmentCacheEntries, least recently used out:
// TestAssignmentCache_IsBounded; the tenants' epochs at maxEpochTenants, past which every
// entry ends: TestAssignmentCache_EpochsAreBounded) and safe for concurrent use (one
// mutex; a hit allocates nothing).

// CacheMaxAge bounds how long a signed assignment is confirmed as current: a quarter of
// AssignmentTTL.
const CacheMaxAge = AssignmentTTL / 4

// DefaultAssignmentCacheEntries is the assignment cache's bound when Config leaves it 0
// (a few hundred bytes an entry).
const DefaultAssignmentCacheEntries = 1 << 17

// maxEpochTenants bounds the tenants whose last change the cache remembers, and
// maxEpochDevices the devices (a reconnect storm of more devices ends every entry once per
// maxEpochDevices attestations: correct, only slower).
const (
	maxEpochTenants = 1 << 14
	maxEpochDevices = 1 << 16
)

// AssignmentCheck is the answer to a device's update check.
type AssignmentCheck struct {
	// Signed is the assignment signed now; nil when NotModified.
	Signed []byte
	// ETag names Signed, or, when NotModified, the assignment the device holds.
	ETag string
	// NotModified: the device holds the current assignment (HTTP 304).
	NotModified bool
}

// AssignmentETag is the strong ETag of a signed assignment: the first 128 bits of its
// SHA-256 in hex, quoted. client.AssignmentETag computes the same on the device
// (TestAssignmentETag_ClientAgrees).
func AssignmentETag(signed []byte) string {
	sum := sha256.Sum256(signed)
	return `"` + hex.EncodeToString(sum[:etagBytes]) + `"`
}

const etagBytes = 16

type etag [etagBytes]byte

// parseETag reads an If-None-Match value that is exactly one ETag of AssignmentETag's
// form; anything else (a list, "*", a weak tag, another form) is no match.
func parseETag(v string) (etag, bool) {
	var e etag
	if len(v) != 2+2*etagBytes || v[0] != '"' || v[len(v)-1] != '"' {
		return e, false
	}
	for i := range etagBytes {
		hi, ok1 := unhex(v[1+2*i])
		lo, ok2 := unhex(v[2+2*i])
		if !ok1 || !ok2 {
			return etag{}, false
		}
		e[i] = hi<<4 | lo
	}
	return e, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// CheckAssignment answers a device's update check. ifNoneMatch is the request's
// If-None-Match ("" without one): when it names the assignment this replica signed for
// the device last and nothing it was computed from has changed since (see above),
// the answer is NotModified; otherwise the assignment is computed and signed now
// (Assignment) and remembered for the device's next check.
func (s *Service) CheckAssignment(ctx context.Context, dev device.Device, ifNoneMatch string) (AssignmentCheck, error) {
	now := s.cfg.Now()
	if tag, ok := parseETag(ifNoneMatch); ok && s.cache.current(&dev, tag, now) {
		s.metrics.notModified.Inc()
		return AssignmentCheck{ETag: ifNoneMatch, NotModified: true}, nil
	}
	epoch := s.cache.epoch() // before the inputs are read: a change meanwhile ends the entry
	data, _, gen, err := s.assignment(ctx, dev, true)
	if err != nil {
		return AssignmentCheck{}, err
	}
	sum := sha256.Sum256(data)
	s.cache.put(&dev, etag(sum[:etagBytes]), gen, epoch, now)
	return AssignmentCheck{Signed: data, ETag: `"` + hex.EncodeToString(sum[:etagBytes]) + `"`}, nil
}

type cacheKey struct {
	tenant tenant.ID
	device device.ID
}

// deviceInputs is what of the device row an assignment is computed from (as
// inputs.generation fingerprints it), kept to compare with the row authentication read.
type deviceInputs struct {
	product   string
	group     string
	blocked   bool
	floors    []floor
	running   device.Running
	runningOK bool
}

type floor struct {
	component string
	version   uint32
}

func deviceInputsOf(dev *device.Device) deviceInputs {
	d := deviceInputs{product: string(dev.ProductID), group: string(dev.GroupID), blocked: dev.Blocked}
	d.running, d.runningOK = dev.Attestation.Running()
	if len(dev.Floors) > 0 {
		d.floors = make([]floor, 0, len(dev.Floors))
		for c, v := range dev.Floors {
			d.floors = append(d.floors, floor{c, v})
		}
	}
	return d
}

// same reports whether dev has these inputs; it allocates nothing.
func (d *deviceInputs) same(dev *device.Device) bool {
	if string(dev.ProductID) != d.product || string(dev.GroupID) != d.group || dev.Blocked != d.blocked ||
		len(dev.Floors) != len(d.floors) {
		return false
	}
	for _, f := range d.floors {
		if v, ok := dev.Floors[f.component]; !ok || v != f.version {
			return false
		}
	}
	run, ok := dev.Attestation.Running()
	return ok == d.runningOK && run == d.running
}

// cacheEntry is the assignment this replica signed for a device last.
type cacheEntry struct {
	key        cacheKey
	tag        etag
	generation string // of its inputs (inputs.generation)
	epoch      uint64 // the cache's epoch before its inputs were read
	signedAt   time.Time
	dev        deviceInputs
	prev, next *cacheEntry // recency list, most recent first
}

// assignmentCache holds, per device, the assignment signed for it last, and the epochs
// that end entries (see the comment at the top of this file).
type assignmentCache struct {
	max int

	mu         sync.Mutex
	entries    map[cacheKey]*cacheEntry
	head, tail *cacheEntry
	seq        uint64               // bumped by every change event
	allAt      uint64               // seq of the last change of every tenant
	tenantAt   map[tenant.ID]uint64 // seq of each tenant's last change, at most maxEpochTenants
	deviceAt   map[device.ID]uint64 // seq of each device's last change, at most maxEpochDevices
}

func newAssignmentCache(max int) *assignmentCache {
	return &assignmentCache{max: max, entries: map[cacheKey]*cacheEntry{}, tenantAt: map[tenant.ID]uint64{}, deviceAt: map[device.ID]uint64{}}
}

// epoch is the cache's epoch now, to be taken before an entry's inputs are read.
func (c *assignmentCache) epoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// changed ends the tenant's entries: something they may be computed from changed.
func (c *assignmentCache) changed(t tenant.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	bump(c, c.tenantAt, t, maxEpochTenants)
}

// changedDevice ends the device's cached row (devcache.go): its row changed (an
// attestation, here or on another replica). Its cached assignment stands or falls by the
// fresh row (deviceInputs.same).
func (c *assignmentCache) changedDevice(id device.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	bump(c, c.deviceAt, id, maxEpochDevices)
}

// bump records a change of k now in at, bounded at limit: forgetting the epochs of a full
// map would revive the entries they ended, so past the bound every entry ends instead.
// c.mu is held.
func bump[K comparable](c *assignmentCache, at map[K]uint64, k K, limit int) {
	c.seq++
	if _, ok := at[k]; !ok && len(at) >= limit {
		clear(c.tenantAt)
		clear(c.deviceAt)
		c.allAt = c.seq
		return
	}
	at[k] = c.seq
}

// ended reports whether a change event for the tenant or the device came after epoch.
func (c *assignmentCache) ended(epoch uint64, t tenant.ID, id device.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endedLocked(epoch, t, id)
}

func (c *assignmentCache) endedLocked(epoch uint64, t tenant.ID, id device.ID) bool {
	return epoch < c.allAt || epoch < c.tenantAt[t] || epoch < c.deviceAt[id]
}

// changedAll ends every entry.
func (c *assignmentCache) changedAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	c.allAt = c.seq
	clear(c.tenantAt)
	clear(c.deviceAt)
}

// current reports whether the device's entry names tag and is still current for dev (the
// device as authentication read it for this request), at now. A stale entry is dropped.
func (c *assignmentCache) current(dev *device.Device, tag etag, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[cacheKey{dev.TenantID, dev.ID}]
	if e == nil {
		return false
	}
	age := now.Sub(e.signedAt)
	// Not the device's own events: what of its row the entry depends on is compared below
	// (same), so an attestation that changed nothing of it keeps the device's 304 (a
	// reconnect storm re-attests every device with the same images).
	if e.epoch < c.allAt || e.epoch < c.tenantAt[dev.TenantID] || age < 0 || age >= CacheMaxAge || !e.dev.same(dev) {
		c.remove(e)
		return false
	}
	if e.tag != tag {
		return false // the device holds another (older, or from another replica): sign anew
	}
	c.toFront(e)
	return true
}

// put makes the assignment just signed for dev its entry.
func (c *assignmentCache) put(dev *device.Device, tag etag, generation string, epoch uint64, now time.Time) {
	if c.max <= 0 {
		return
	}
	inputs := deviceInputsOf(dev)
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKey{dev.TenantID, dev.ID}
	if e := c.entries[k]; e != nil {
		c.remove(e)
	}
	e := &cacheEntry{key: k, tag: tag, generation: generation, epoch: epoch, signedAt: now, dev: inputs}
	c.entries[k] = e
	c.toFront(e)
	for len(c.entries) > c.max {
		c.remove(c.tail)
	}
}

// dropUnless drops the device's entry unless it was computed from inputs of this
// generation.
func (c *assignmentCache) dropUnless(t tenant.ID, id device.ID, generation string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[cacheKey{t, id}]; e != nil && e.generation != generation {
		c.remove(e)
	}
}

func (c *assignmentCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// toFront makes e the most recently used entry (linking it in if it is not).
func (c *assignmentCache) toFront(e *cacheEntry) {
	if c.head == e {
		return
	}
	c.unlink(e)
	e.next = c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *assignmentCache) unlink(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else if c.head == e {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else if c.tail == e {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (c *assignmentCache) remove(e *cacheEntry) {
	c.unlink(e)
	delete(c.entries, e.key)
}
