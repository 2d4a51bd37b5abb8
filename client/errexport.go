package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"time"
)

// TenantErrorReport is a report in the tenant-wide list and the JSON download, with the
// product and group its device is in now.
type TenantErrorReport struct {
	DeviceID   string      `json:"device_id"`
	ProductID  string      `json:"product_id,omitempty"`
	GroupID    string      `json:"group_id,omitempty"`
	ReceivedAt time.Time   `json:"received_at"`
	Report     ErrorReport `json:"report"`
}

// ErrorReportFilter selects reports; empty fields select all. Product and Group are IDs
// (Group needs Product); Since (inclusive) and Until (exclusive) bound when the service
// received each report.
type ErrorReportFilter struct {
	Product, Group, Device string
	// Kind is app_crash, update_failed, attestation_refused, capability_denied or agent.
	Kind                    string
	ImagePath, ImageVersion string
	Since, Until            time.Time
}

func (f ErrorReportFilter) query(q url.Values) url.Values {
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("product", f.Product)
	set("group", f.Group)
	set("device", f.Device)
	set("kind", f.Kind)
	set("image_path", f.ImagePath)
	set("image_version", f.ImageVersion)
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	return q
}

// ListTenantErrorReports lists the tenant's error reports that f selects, newest received
// first.
func (c *Client) ListTenantErrorReports(ctx context.Context, tenant string, f ErrorReportFilter, opts ListOptions) (Page[TenantErrorReport], error) {
	var out Page[TenantErrorReport]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "error-reports"}, query: f.query(listQuery(opts))}, &out)
	return out, err
}

// ExportErrorReports streams the tenant's error reports that f selects into w, newest
// received first, as CSV (format "csv": the columns of docs/error-reports.md) or one JSON
// array of TenantErrorReport objects (format "json"), and returns the bytes written. A
// download the server cut off midway is an error.
func (c *Client) ExportErrorReports(ctx context.Context, tenant, format string, f ErrorReportFilter, w io.Writer) (int64, error) {
	var n int64
	q := f.query(url.Values{})
	if format != "" {
		q.Set("format", format)
	}
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "error-reports", "export"}, query: q, sink: w}, &n)
	return n, err
}

// VersionHealth is the health of one image version over a window: the staged-rollout
// gate's inputs (the formulas: docs/error-reports.md, "Version health").
type VersionHealth struct {
	// Kind is os or app.
	Kind           string `json:"kind"`
	Target         string `json:"target"`
	Version        string `json:"version"`
	Devices        int    `json:"devices"`
	CrashedDevices int    `json:"crashed_devices"`
	// CrashFreePercent is absent when no device runs the version.
	CrashFreePercent *float64 `json:"crash_free_percent,omitempty"`
	Crashes          int      `json:"crashes"`
	DeviceHours      float64  `json:"device_hours"`
	// CrashesPerDeviceHour is absent when the devices ran the version for no time.
	CrashesPerDeviceHour *float64 `json:"crashes_per_device_hour,omitempty"`
}

// ImageHealth is the health of every image version of a tenant over one window.
type ImageHealth struct {
	ProductID string          `json:"product_id,omitempty"`
	From      time.Time       `json:"from"`
	Until     time.Time       `json:"until"`
	Window    string          `json:"window"`
	Versions  []VersionHealth `json:"versions"`
}

// GetImageHealth returns the health of each OS and app version the tenant's devices run
// (of one product, when product is not empty) over the window before now (the server's
// default, 168h, when window is 0).
func (c *Client) GetImageHealth(ctx context.Context, tenant, product string, window time.Duration) (ImageHealth, error) {
	var out ImageHealth
	q := url.Values{}
	if product != "" {
		q.Set("product", product)
	}
	if window != 0 {
		q.Set("window", window.String())
	}
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "image-health"}, query: q}, &out)
	return out, err
}
