package errqueue

import (
	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/spool"
	"github.com/moat-iot/moat/internal/errreport"
)

// ErrShortWrite, returned by a fault function for a "write", tears the write in half.
var ErrShortWrite = spool.ErrShortWrite

// OpenFaulty opens a queue whose every file operation ("create", "write", "sync",
// "rename", "syncdir", "remove") first asks fault; an error stops it there, as a power cut.
func OpenFaulty(cfg Config, fault func(op string) error) (*Queue, error) {
	return open(cfg, fault)
}

// ToWire is toWire.
func ToWire(r errreport.Report) client.ErrorReport { return toWire(r) }

// DropReserve is dropReserve.
const DropReserve = dropReserve
