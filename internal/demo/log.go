package demo

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/moat-iot/moat/internal/agent"
)

// fleetLog is the handler of the demo fleet's agents: it passes agent.NoSandboxWarning on
// for the first agent only. Every demo agent runs its app without the sandbox (the demo
// does not run as root), so one warning says it for all, and the demo's own output does
// not drown in copies.
type fleetLog struct {
	slog.Handler
	warned *atomic.Bool // shared by the handlers WithAttrs and WithGroup derive
}

func newFleetLog(h slog.Handler) slog.Handler { return fleetLog{Handler: h, warned: new(atomic.Bool)} }

func (h fleetLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == agent.NoSandboxWarning && h.warned.Swap(true) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h fleetLog) WithAttrs(as []slog.Attr) slog.Handler {
	return fleetLog{Handler: h.Handler.WithAttrs(as), warned: h.warned}
}

func (h fleetLog) WithGroup(name string) slog.Handler {
	return fleetLog{Handler: h.Handler.WithGroup(name), warned: h.warned}
}
