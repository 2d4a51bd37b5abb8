package updqueue

import (
	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/updstate"
)

// ToWire exposes toWire to the tests (compiled into tests only).
func ToWire(r updstate.Report) client.UpdateState { return toWire(r) }
