package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Fleet states of a device (docs/fleet-status.md), in the order they are decided.
const (
	StateNever   = "never"
	StateRefused = "refused"
	StateCurrent = "current"
	StateFailed  = "failed"
	StatePending = "pending"
)

// ShouldImage is one image a device should run.
type ShouldImage struct {
	Target  string `json:"target"`
	Version string `json:"version"`
}

// Should is what a device, or every device of a group, should run and why. OS or App is
// nil when the director assigns no image of that kind (the device keeps what it runs).
type Should struct {
	OS        *ShouldImage `json:"os,omitempty"`
	App       *ShouldImage `json:"app,omitempty"`
	OSReason  string       `json:"os_reason"`
	AppReason string       `json:"app_reason"`
	Policy    string       `json:"policy"`
}

// Running is what a device runs by its last successful attestation ("" for a kind it did
// not measure, or before any success).
type Running struct {
	OSTarget   string `json:"os_target"`
	OSVersion  string `json:"os_version"`
	AppTarget  string `json:"app_target"`
	AppVersion string `json:"app_version"`
}

// StateCounts counts devices per fleet state.
type StateCounts struct {
	Devices int `json:"devices"`
	Current int `json:"current"`
	Pending int `json:"pending"`
	Failed  int `json:"failed"`
	Refused int `json:"refused"`
	Never   int `json:"never_attested"`
}

// StatusRow counts a group's devices that run one combination of images.
type StatusRow struct {
	Does    Running     `json:"does"`
	Matches bool        `json:"matches"`
	Counts  StateCounts `json:"counts"`
}

// GroupStatus is one device group's part of the fleet-status matrix.
type GroupStatus struct {
	GroupID string      `json:"device_group_id"`
	Group   string      `json:"device_group"`
	Should  Should      `json:"should"`
	Rows    []StatusRow `json:"rows"`
	Totals  StateCounts `json:"totals"`
}

// FleetStatus is the fleet-status matrix of a product.
type FleetStatus struct {
	ProductID string        `json:"product_id"`
	Product   string        `json:"product"`
	Groups    []GroupStatus `json:"device_groups"`
	Totals    StateCounts   `json:"totals"`
	Truncated bool          `json:"truncated"`
}

// AttestationOutcome is the outcome of a device's last attestation; Refusal is empty on
// success.
type AttestationOutcome struct {
	At      time.Time `json:"at"`
	Refusal string    `json:"refusal,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

// DeviceStatus is one device's fleet status. Should is what the director assigns the
// device now; when its floors make that differ from its group's, OwnShould is set and
// GroupShould is the group's, which State compares it with.
type DeviceStatus struct {
	ID            string              `json:"id"`
	ProductID     string              `json:"product_id"`
	GroupID       string              `json:"device_group_id"`
	Blocked       bool                `json:"blocked"`
	Should        Should              `json:"should"`
	OwnShould     bool                `json:"own_should"`
	GroupShould   *Should             `json:"group_should,omitempty"`
	Does          Running             `json:"does"`
	State         string              `json:"state"`
	UpdateState   string              `json:"update_state"`
	UpdateStateAt *time.Time          `json:"update_state_at,omitempty"`
	LastSeenAt    *time.Time          `json:"last_seen_at,omitempty"`
	Attestation   *AttestationOutcome `json:"attestation,omitempty"`
}

// GetFleetStatus returns the fleet-status matrix of the product named productName (of its
// group named groupName when not empty).
func (c *Client) GetFleetStatus(ctx context.Context, tenant, productName, groupName string) (FleetStatus, error) {
	q := url.Values{"product": {productName}}
	if groupName != "" {
		q.Set("group", groupName)
	}
	var out FleetStatus
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "fleet-status"}, query: q}, &out)
	return out, err
}

// ListDeviceStatuses lists the devices of opts.Product (required), optionally of opts.Group
// and in opts.State, each with its fleet status.
func (c *Client) ListDeviceStatuses(ctx context.Context, tenant string, opts ListOptions) (Page[DeviceStatus], error) {
	var out Page[DeviceStatus]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "device-statuses"}, query: listQuery(opts)}, &out)
	return out, err
}
