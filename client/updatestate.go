package client

import (
	"context"
	"net/http"
	"time"
)

// Update states a device reports (docs/agent.md).
const (
	UpdateAssigned    = "assigned"
	UpdateDownloading = "downloading"
	UpdateInstalled   = "installed"
	UpdateCommitted   = "committed"
	UpdateRolledBack  = "rolled_back"
	UpdateFailed      = "failed"
	UpdateDeferred    = "deferred"
)

// UpdateState is one step of an update a device took, by its clock.
type UpdateState struct {
	// ID is unique per device (a ULID or UUID the device made).
	ID    string    `json:"id"`
	At    time.Time `json:"at"`
	State string    `json:"state"`
	// Kind is "os" or "app"; Target the TUF target path being installed.
	Kind    string `json:"kind"`
	Target  string `json:"target"`
	Version string `json:"version,omitempty"`
	// BytesDone of BytesTotal arrived (downloading only).
	BytesDone  int64 `json:"bytes_done,omitempty"`
	BytesTotal int64 `json:"bytes_total,omitempty"`
	// Code and Message say why (failed and rolled_back; optional for deferred).
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// DeferredUntil is until when the device postponed the update (deferred only).
	DeferredUntil *time.Time `json:"deferred_until,omitempty"`
}

// UpdateStateBatch is an upload of up to 100 update states.
type UpdateStateBatch struct {
	Reports []UpdateState `json:"reports"`
}

// UpdateStatesAccepted lists the IDs of an upload the server now holds: delete exactly
// these from the queue.
type UpdateStatesAccepted struct {
	Accepted []string `json:"accepted"`
}

// UpdateStateRecord is an update state as the server holds it.
type UpdateStateRecord struct {
	DeviceID   string      `json:"device_id"`
	ReceivedAt time.Time   `json:"received_at"`
	Report     UpdateState `json:"report"`
}

// CreateUpdateStates uploads the calling device's update states (device API, mutual TLS).
// The server files them under the device the certificate names. A report ID the server
// already holds is accepted again and stored once; an invalid report refuses the whole
// batch with a 400 *Error whose Field names it (reports[3].state).
func (c *Client) CreateUpdateStates(ctx context.Context, batch UpdateStateBatch) (UpdateStatesAccepted, error) {
	var out UpdateStatesAccepted
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"device", "update-states"}, body: batch}, &out)
	return out, err
}

// ListUpdateStates lists a device's update history, newest first by the device's time.
func (c *Client) ListUpdateStates(ctx context.Context, tenant, device string, opts ListOptions) (Page[UpdateStateRecord], error) {
	var out Page[UpdateStateRecord]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "devices", device, "update-states"}, query: listQuery(opts)}, &out)
	return out, err
}
