package store

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/updstate"
)

// MaxUpdateEventsPerDevice bounds the update history stored for one device: UpdateEvents.Add
// deletes the oldest (by the device's time, then ID) beyond it, so a device that floods
// reports costs bounded space and keeps its newest ones.
const MaxUpdateEventsPerDevice = 200

// UpdateEvents holds the update history of one tenant's devices, and with it each device's
// latest update state (device.Device.UpdateState).
type UpdateEvents interface {
	// Add stores the report of the tenant's device (ErrNotFound when the device is not the
	// tenant's), received at receivedAt (stored to the microsecond). A report ID the device
	// already stored is a no-op that returns nil, whatever the content: devices deliver at
	// least once, the store keeps the first copy. Beyond MaxUpdateEventsPerDevice reports
	// of the device, the oldest are deleted. The device's UpdateState and UpdateStateAt
	// become the report's when it is the device's newest by (At, ID): a report that arrives
	// late never moves them back.
	Add(ctx context.Context, deviceID device.ID, r updstate.Report, receivedAt time.Time) error
	// List returns the device's history, newest first by (At, ID): Page.After is the ID of
	// the last report of the previous page. A device with no reports, or that is not the
	// tenant's, has an empty list.
	List(ctx context.Context, deviceID device.ID, p Page) ([]updstate.Record, error)
}
