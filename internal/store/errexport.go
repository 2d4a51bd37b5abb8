package store

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/product"
)

// ReportQueries are the tenant-wide reads of error reports: the report list and download
// (issue 11, error-report insights) and the per-version figures the rollout gate reads.
// ErrorReports embeds it.
type ReportQueries interface {
	// ListTenant returns the tenant's reports that f selects, newest received first
	// (reports received together by device ID, then report ID, descending), those after the
	// cursor after (the zero cursor: from the newest), at most limit (MaxLimit when not
	// positive or larger). Export walks a million reports in batches of it.
	ListTenant(ctx context.Context, f ReportFilter, after ReportCursor, limit int) ([]TenantReport, error)
	// VersionFigures counts, for every image version of kind (attest.KindOS or KindApp) that
	// a device of the tenant runs or that an app_crash report received in the window names,
	// the figures version health is computed from (internal/insight). Devices of another
	// product than f.ProductID (when set) are left out.
	VersionFigures(ctx context.Context, q FiguresQuery) ([]VersionFigures, error)
}

// ReportFilter selects reports; a zero field selects all. Product and group are the
// device's now, not when it reported.
type ReportFilter struct {
	ProductID    product.ID
	GroupID      product.GroupID
	DeviceID     device.ID
	Kind         errreport.Kind
	ImagePath    string
	ImageVersion string
	// Since (inclusive) and Until (exclusive) bound the time the service received the
	// report; the device's own clock may be anything.
	Since, Until time.Time
}

// ReportCursor is the position of a report in ListTenant's order; the zero cursor is the
// start.
type ReportCursor struct {
	ReceivedAt time.Time
	DeviceID   device.ID
	ID         string
}

// IsZero reports whether c is the start.
func (c ReportCursor) IsZero() bool { return c.DeviceID == "" && c.ID == "" && c.ReceivedAt.IsZero() }

// TenantReport is a report with the product and group its device is in now.
type TenantReport struct {
	DeviceID   device.ID        `json:"device_id"`
	ProductID  product.ID       `json:"product_id,omitempty"`
	GroupID    product.GroupID  `json:"group_id,omitempty"`
	ReceivedAt time.Time        `json:"received_at"`
	Report     errreport.Report `json:"report"`
}

// Cursor is r's position, for the next ListTenant call.
func (r TenantReport) Cursor() ReportCursor {
	return ReportCursor{ReceivedAt: r.ReceivedAt, DeviceID: r.DeviceID, ID: r.Report.ID}
}

// FiguresQuery selects what VersionFigures counts.
type FiguresQuery struct {
	// Kind is attest.KindOS ("os") or attest.KindApp ("app").
	Kind      string
	ProductID product.ID
	// From and Until bound the window; Until is the time the device-hours end at.
	From, Until time.Time
}

// VersionFigures are the counts of one image version over a window (see docs/error-reports.md,
// "Version health").
type VersionFigures struct {
	Target  string // the image's target path
	Version string
	// Running counts the devices whose last successful attestation shows this version.
	Running int
	// CrashedRunning counts those of them with at least one app_crash report in the window
	// that is attributed to the version.
	CrashedRunning int
	// Crashes counts the app_crash reports in the window attributed to the version.
	Crashes int
	// DeviceHours sums, over the running devices, the hours they ran it within the window.
	DeviceHours float64
}

// DeviceHours is one device's runtime on its version within [from, until], in hours:
// min(until, the later of lastSeen and attested) − max(from, since), clamped at 0. since
// defaults to attested (a device written before its since was kept); a device with
// neither ran nothing that is known.
func DeviceHours(since, attested, lastSeen *time.Time, from, until time.Time) float64 {
	if since == nil {
		since = attested
	}
	if since == nil {
		return 0
	}
	end := until
	last := attested
	if lastSeen != nil && (last == nil || lastSeen.After(*last)) {
		last = lastSeen
	}
	if last != nil && last.Before(end) {
		end = *last
	}
	start := from
	if since.After(start) {
		start = *since
	}
	return max(0, end.Sub(start).Hours())
}
