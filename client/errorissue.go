package client

import (
	"context"
	"net/http"
	"time"
)

// ErrorIssue is the reports of a tenant that share a signature: kind, image name, exit
// code or signal, code, step, target name, capability and the message with numbers,
// addresses, IDs, paths and quoted values replaced (docs/error-reports.md#issues). The
// figures count the reports the server still stores.
type ErrorIssue struct {
	ID        string `json:"id"`
	Signature string `json:"signature"`
	Kind      string `json:"kind"`
	// ImageName is the image path without its version (apps/<name>, os/<name>).
	ImageName string `json:"image_name,omitempty"`
	// Message is the message of the newest report.
	Message string `json:"message,omitempty"`
	Reports int64  `json:"reports"`
	// Devices is how many devices sent at least one of the reports.
	Devices int64 `json:"devices"`
	// FirstSeen and LastSeen are when the oldest and newest reports were received.
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// ErrorIssueVersion is how many of an issue's reports named one image version.
type ErrorIssueVersion struct {
	Version string `json:"version"`
	Reports int64  `json:"reports"`
}

// ErrorIssueDay is how many of an issue's reports were received on one UTC day.
type ErrorIssueDay struct {
	Day     string `json:"day"` // YYYY-MM-DD
	Reports int64  `json:"reports"`
}

// ErrorIssueDetail is an issue with its versions (most reported first) and its reports
// per day over the last 30 days, oldest first, zeros included.
type ErrorIssueDetail struct {
	Issue    ErrorIssue          `json:"issue"`
	Versions []ErrorIssueVersion `json:"versions"`
	Days     []ErrorIssueDay     `json:"days"`
}

// ErrorIssueOptions selects and orders a list of issues.
type ErrorIssueOptions struct {
	ListOptions
	// Product keeps the issues of the apps published for the product with this name.
	Product string
	// Kind keeps the issues of one kind (app_crash, update_failed, ...).
	Kind string
	// Since keeps the issues with a report received at or after it.
	Since time.Time
	// Sort is "last_seen" (the default: most recently seen first) or "reports" (most
	// reported first).
	Sort string
}

// ListErrorIssues lists the tenant's error issues.
func (c *Client) ListErrorIssues(ctx context.Context, tenant string, opts ErrorIssueOptions) (Page[ErrorIssue], error) {
	q := listQuery(opts.ListOptions)
	for k, v := range map[string]string{"product": opts.Product, "kind": opts.Kind, "sort": opts.Sort} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !opts.Since.IsZero() {
		q.Set("since", opts.Since.UTC().Format(time.RFC3339Nano))
	}
	var out Page[ErrorIssue]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "error-issues"}, query: q}, &out)
	return out, err
}

// GetErrorIssue returns an issue with its versions and reports per day.
func (c *Client) GetErrorIssue(ctx context.Context, tenant, id string) (ErrorIssueDetail, error) {
	var out ErrorIssueDetail
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "error-issues", id}}, &out)
	return out, err
}

// ListErrorIssueReports lists an issue's reports, newest received first.
func (c *Client) ListErrorIssueReports(ctx context.Context, tenant, id string, opts ListOptions) (Page[ErrorReportRecord], error) {
	var out Page[ErrorReportRecord]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "error-issues", id, "reports"}, query: listQuery(opts)}, &out)
	return out, err
}
