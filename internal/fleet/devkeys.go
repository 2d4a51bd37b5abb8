package fleet

import (
	"container/list"
	"crypto/sha256"
	"sync"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/envelope"
	"github.com/moat-iot/moat/internal/keys"
)

// maxDeviceKeys bounds the cache of parsed device identity keys (a few hundred bytes each).
const maxDeviceKeys = 1 << 14

// deviceKeys caches parsed device public keys with their key IDs, least recently used out, keyed by device ID
// and the SHA-256 of the stored PEM, so that a changed key is never served from the cache.
// Only registered devices' stored keys enter it. Safe for concurrent use.
type deviceKeys struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *keyEntry, most recent first
	m   map[keyRef]*list.Element
}

type keyRef struct {
	id  device.ID
	sum [sha256.Size]byte
}

type keyEntry struct {
	ref keyRef
	key envelope.Key
}

func newDeviceKeys(limit int) *deviceKeys {
	return &deviceKeys{max: limit, ll: list.New(), m: map[keyRef]*list.Element{}}
}

// get returns the parsed key of the device's stored PEM.
func (c *deviceKeys) get(id device.ID, pemText string) (envelope.Key, error) {
	ref := keyRef{id: id, sum: sha256.Sum256([]byte(pemText))}
	c.mu.Lock()
	if e, ok := c.m[ref]; ok {
		c.ll.MoveToFront(e)
		k := e.Value.(*keyEntry).key
		c.mu.Unlock()
		return k, nil
	}
	c.mu.Unlock()
	pub, err := keys.ParsePublicPEM([]byte(pemText))
	if err != nil {
		return envelope.Key{}, err
	}
	k, err := envelope.NewKey(pub)
	if err != nil {
		return envelope.Key{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[ref]; !ok {
		c.m[ref] = c.ll.PushFront(&keyEntry{ref: ref, key: k})
		for c.ll.Len() > c.max {
			last := c.ll.Back()
			c.ll.Remove(last)
			delete(c.m, last.Value.(*keyEntry).ref)
		}
	}
	return k, nil
}
