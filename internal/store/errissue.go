package store

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/errreport"
)

// ErrorIssues groups one tenant's error reports into issues by their signature
// (errreport.Signature). ErrorReports.Add counts each report it stores into its issue, and
// every deletion of reports (the per-device bound, DeleteReceivedBefore) takes it out, so
// the figures are exact over the reports stored and a list of issues reads one row per
// issue, never the reports.
type ErrorIssues interface {
	// ListIssues returns the tenant's issues that pass f, ordered by f.Sort descending,
	// then by ID descending. Page.After is the previous page's last issue's
	// f.Sort.SortKey; one that ParseSortKey refuses is ErrNotFound.
	ListIssues(ctx context.Context, f errreport.IssueFilter, p Page) ([]errreport.Issue, error)
	// GetIssue returns the issue with the versions its reports named and its reports per
	// UTC day for the errreport.IssueDays days ending with the day of now. ErrNotFound when
	// the tenant has no such issue (none of its reports is stored any more, or another
	// tenant's).
	GetIssue(ctx context.Context, id string, now time.Time) (errreport.IssueDetail, error)
	// ListIssueReports returns the issue's reports, newest received first; Page.After is
	// ReportKey of the previous page's last report. An unknown issue has an empty list.
	ListIssueReports(ctx context.Context, id string, p Page) ([]errreport.Record, error)
	// DeleteReceivedBefore deletes up to limit of the tenant's reports received before
	// before, the oldest first, and takes them out of their issues; it returns how many it
	// deleted (fewer than limit: none older is left).
	DeleteReceivedBefore(ctx context.Context, before time.Time, limit int) (int, error)
}

// ReportKey names a report across a tenant's devices, for paging ListIssueReports.
func ReportKey(r errreport.Record) string { return string(r.DeviceID) + "/" + r.Report.ID }
