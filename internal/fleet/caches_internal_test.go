package fleet

import (
	"fmt"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/keys"
)

// TestSpentSet_IsBoundedAndExpires: a flood of nonces never grows the set past its bound;
// expired entries make room; a nonce it could not hold is still fresh (the store decides).
func TestSpentSet_IsBoundedAndExpires(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	s := newSpentSet(4)
	for i := range 10 {
		if fresh, _ := s.reserve(fmt.Sprint(i), now.Add(time.Minute), now); !fresh {
			t.Fatalf("nonce %d not fresh", i)
		}
	}
	if n := s.len(); n != 4 {
		t.Errorf("%d entries after 10 nonces, want the bound 4", n)
	}
	if fresh, note := s.reserve("0", now.Add(time.Minute), now); fresh || !note {
		t.Errorf("replay of a held nonce: fresh %v, note %v; want false, true", fresh, note)
	}
	if fresh, note := s.reserve("0", now.Add(time.Minute), now); fresh || note {
		t.Errorf("second replay: fresh %v, note %v; want false, false (one record per nonce)", fresh, note)
	}
	later := now.Add(2 * time.Minute)
	if fresh, _ := s.reserve("new", later.Add(time.Minute), later); !fresh || s.len() != 1 {
		t.Errorf("after expiry: fresh %v, %d entries; want true and 1 (the expired swept)", fresh, s.len())
	}
}

// TestDeviceKeys_IsBoundedAndKeyedByPEM: the least recently used key leaves past the
// bound, and a device whose stored key changed never gets the old one.
func TestDeviceKeys_IsBoundedAndKeyedByPEM(t *testing.T) {
	t.Parallel()
	c := newDeviceKeys(2)
	pems := make([]string, 3)
	for i := range pems {
		k, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		p, err := keys.EncodePublicPEM(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		pems[i] = string(p)
	}
	for i, p := range pems {
		if _, err := c.get(device.ID(fmt.Sprint(i)), p); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.ll.Len(); n != 2 || len(c.m) != 2 {
		t.Errorf("%d entries (map %d) after 3 keys, want the bound 2", n, len(c.m))
	}
	a, err := c.get("same", pems[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.get("same", pems[1])
	if err != nil {
		t.Fatal(err)
	}
	if a.Public().Equal(b.Public()) || a.ID() == b.ID() {
		t.Error("a device whose stored key changed got its old key from the cache")
	}
}
