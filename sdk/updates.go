package sdk

import (
	"context"
	"fmt"
	"time"
)

// MaxDeferral is the longest one DeferUpdates may ask for. The runtime bounds every
// deferral further by the product's setting (24 h unless the tenant changed it), counted
// from the first time a deferral held back the pending update.
const MaxDeferral = 7 * 24 * time.Hour

// DeferUpdates asks the runtime to install no update, app or OS, for d from now (Azure
// Sphere's SoftwareUpdateDeferral): call it when the app starts work that must not be
// interrupted, a wash cycle. d is rounded up to a whole second, 1 s to MaxDeferral. It
// returns until when the app asked. The runtime keeps downloading meanwhile, and installs
// anyway once the product's bound has passed; a later DeferUpdates replaces this one.
func (c *Client) DeferUpdates(ctx context.Context, d time.Duration) (time.Time, error) {
	secs := int64((d + time.Second - 1) / time.Second)
	if d <= 0 || d > MaxDeferral {
		return time.Time{}, fmt.Errorf("moat update.defer: %v is not 1s to %v: %w", d, MaxDeferral, ErrBadRequest)
	}
	var res struct {
		Until string `json:"until"`
	}
	if err := c.call(ctx, "update.defer", map[string]any{"seconds": secs}, &res); err != nil {
		return time.Time{}, err
	}
	until, err := time.Parse(time.RFC3339, res.Until)
	if err != nil {
		return time.Time{}, fmt.Errorf("moat update.defer: until %q: %w", res.Until, ErrProtocol)
	}
	return until, nil
}

// AllowUpdates ends the app's deferral: pending updates install now (inside the device
// group's maintenance window, if it has one). Installing a new app stops this one.
func (c *Client) AllowUpdates(ctx context.Context) error {
	return c.call(ctx, "update.allow", nil, nil)
}
