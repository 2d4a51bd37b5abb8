package update

import (
	"bytes"
	"maps"
	"sync"

	"github.com/moat-iot/moat/internal/atomicfile"
	"github.com/moat-iot/moat/internal/director"
)

// MemoryState is a Client's anti-rollback state (the last accepted counter, the floors and
// the held assignment) held in memory instead of in StateDir, for simulated devices that
// hold no disk (`moat sim`). The checks are the same; only the place differs, so the state is lost with the
// process: a real device never uses it. Safe for concurrent use; one per device.
type MemoryState struct {
	mu      sync.Mutex
	counter uint64
	floors  map[string]uint32
	held    []byte
}

// NewMemoryState returns the state of a device that accepted no assignment yet: counter
// 0, every floor 0.
func NewMemoryState() *MemoryState {
	return &MemoryState{floors: map[string]uint32{director.KindOS: 0, director.KindApp: 0}}
}

// Floors returns a copy of the anti-rollback floors.
func (m *MemoryState) Floors() map[string]uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.floors)
}

// The Client's state, in StateDir or in Memory.

func (c *Client) readCounter() (uint64, error) {
	if m := c.cfg.Memory; m != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.counter, nil
	}
	return readCounter(c.cfg.StateDir)
}

func (c *Client) writeCounter(n uint64) error {
	if m := c.cfg.Memory; m != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.counter = n
		return nil
	}
	return writeCounter(c.cfg.StateDir, n)
}

func (c *Client) readFloors() (map[string]uint32, error) {
	if m := c.cfg.Memory; m != nil {
		return m.Floors(), nil
	}
	return readFloors(c.cfg.StateDir)
}

func (c *Client) writeFloors(floors map[string]uint32) error {
	if m := c.cfg.Memory; m != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.floors = maps.Clone(floors)
		return nil
	}
	return writeFloors(c.cfg.StateDir, floors)
}

func (c *Client) readHeld() ([]byte, error) {
	if m := c.cfg.Memory; m != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.held, nil
	}
	return readHeld(c.cfg.StateDir)
}

func (c *Client) writeHeld(assignment []byte) error {
	if m := c.cfg.Memory; m != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.held = bytes.Clone(assignment)
		return nil
	}
	return atomicfile.Write(c.cfg.StateDir, heldFile, assignment)
}
