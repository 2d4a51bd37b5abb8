package fleet

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// SeenEvery is how coarse a device's last_seen_at is: a device that calls the device API
// with its certificate writes it at most once per SeenEvery, so that an update check or a
// long-poll that changes nothing is not a write each time (issue 11).
const SeenEvery = 5 * time.Minute

// seen records that an authenticated device called. The device as authentication loaded
// it says when it was last seen: within SeenEvery this costs nothing (no transaction, no
// allocation); past it, one conditional UPDATE (TenantDevices.Seen), which a concurrent
// request of the same device makes a no-op. A failure is logged, not returned: last seen
// is for support staff and must not refuse a device its update.
func (s *Service) seen(ctx context.Context, dev device.Device) {
	now := s.cfg.Now()
	if dev.LastSeenAt != nil && now.Sub(*dev.LastSeenAt) < SeenEvery {
		return
	}
	s.writeSeen(ctx, dev.TenantID, dev.ID, now)
}

// writeSeen is seen's write, apart so that what its closure captures is allocated only
// when it runs, not on every authenticated request.
func (s *Service) writeSeen(ctx context.Context, t tenant.ID, id device.ID, now time.Time) {
	err := s.cfg.Store.InTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		_, err = tt.Devices().Seen(ctx, id, now, SeenEvery)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "record device last seen", "device_id", id, "tenant_id", t, "err", err)
		}
		return
	}
	s.devices.seen(t, id, now) // or its cached row would write it again on every request
}
