package client

import (
	"context"
	"net/http"
	"time"
)

// ErrorReport is one error report a device made (the format: docs/error-reports.md).
// Fields after Message belong to one kind each and are absent on the others.
type ErrorReport struct {
	// ID is unique per device: a ULID (26 characters) or a UUID, made on the device.
	ID string `json:"id"`
	// Kind is app_crash, update_failed, attestation_refused, capability_denied or agent.
	Kind string `json:"kind"`
	// At is when it happened, by the device's clock.
	At           time.Time `json:"at"`
	ImagePath    string    `json:"image_path,omitempty"`
	ImageVersion string    `json:"image_version,omitempty"`
	Code         string    `json:"code,omitempty"`
	Message      string    `json:"message,omitempty"`

	// app_crash
	ExitCode      *int   `json:"exit_code,omitempty"`
	Signal        string `json:"signal,omitempty"`
	UptimeSeconds int64  `json:"uptime_seconds,omitempty"`
	StderrTail    string `json:"stderr_tail,omitempty"`

	// update_failed: download, verify, install, boot, health or attest.
	Step   string `json:"step,omitempty"`
	Target string `json:"target,omitempty"`

	// capability_denied
	Capability string `json:"capability,omitempty"`

	// agent
	Dropped int64 `json:"dropped,omitempty"`
}

// ErrorReportBatch is an upload of up to 100 reports.
type ErrorReportBatch struct {
	Reports []ErrorReport `json:"reports"`
}

// ErrorReportsAccepted lists the IDs of an upload the server now holds: delete exactly
// these from the device's queue.
type ErrorReportsAccepted struct {
	Accepted []string `json:"accepted"`
}

// ErrorReportRecord is a report as the server holds it.
type ErrorReportRecord struct {
	DeviceID   string      `json:"device_id"`
	ReceivedAt time.Time   `json:"received_at"`
	Report     ErrorReport `json:"report"`
}

// CreateErrorReports uploads the calling device's error reports (device API, mutual TLS).
// A report ID the server already holds is accepted again and stored once; an invalid
// report refuses the whole batch with a 400 *Error whose Field names it
// (reports[3].kind).
func (c *Client) CreateErrorReports(ctx context.Context, batch ErrorReportBatch) (ErrorReportsAccepted, error) {
	var out ErrorReportsAccepted
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"device", "error-reports"}, body: batch}, &out)
	return out, err
}

// ListErrorReports lists a device's error reports, newest received first.
func (c *Client) ListErrorReports(ctx context.Context, tenant, device string, opts ListOptions) (Page[ErrorReportRecord], error) {
	var out Page[ErrorReportRecord]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "devices", device, "error-reports"}, query: listQuery(opts)}, &out)
	return out, err
}
