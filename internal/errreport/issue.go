package errreport

import (
	"strconv"
	"strings"
	"time"
)

// Issue is the reports of one tenant that share a signature, as the security service
// keeps them: counts over the reports it still stores (the per-device bound and retention
// delete old ones, and take them out of these figures).
type Issue struct {
	ID string `json:"id"`
	// Signature is the text IssueID hashes (Signature): what the reports have in common.
	Signature string `json:"signature"`
	Kind      Kind   `json:"kind"`
	// ImageName is the image path without its version (apps/<name>, os/<name>); empty
	// for reports that name no image.
	ImageName string `json:"image_name,omitempty"`
	// Message is the message of the newest report received, as the device wrote it.
	Message string `json:"message,omitempty"`
	Reports int64  `json:"reports"`
	// Devices is how many devices sent at least one of the reports.
	Devices int64 `json:"devices"`
	// FirstSeen and LastSeen are when the oldest and the newest of the reports were
	// received (the server's clock, not the device's).
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// IssueVersion is how many of an issue's reports named one image version.
type IssueVersion struct {
	Version string `json:"version"`
	Reports int64  `json:"reports"`
}

// IssueDay is how many of an issue's reports were received on one UTC day.
type IssueDay struct {
	// Day is YYYY-MM-DD.
	Day     string `json:"day"`
	Reports int64  `json:"reports"`
}

// IssueDetail is an issue with the image versions its reports named (most reported
// first) and its reports per day over the last IssueDays days, oldest first, every day
// present (zero when none).
type IssueDetail struct {
	Issue    Issue          `json:"issue"`
	Versions []IssueVersion `json:"versions"`
	Days     []IssueDay     `json:"days"`
}

// IssueDays is how many days IssueDetail.Days covers.
const IssueDays = 30

// DayFormat is the layout of IssueDay.Day.
const DayFormat = "2006-01-02"

// IssueSort orders a list of issues.
type IssueSort string

// Orders of a list of issues, each descending, then by ID descending.
const (
	ByLastSeen IssueSort = "last_seen"
	ByReports  IssueSort = "reports"
)

// IssueFilter selects a tenant's issues.
type IssueFilter struct {
	// ImageNames, when not nil, keeps issues whose image name is one of them; an empty,
	// non-nil list keeps none (a product that has no published app).
	ImageNames []string
	// Kind, when set, keeps issues of that kind.
	Kind Kind
	// Since, when set, keeps issues with a report received at or after it.
	Since time.Time
	// Sort is ByLastSeen (also when empty) or ByReports.
	Sort IssueSort
}

// SortKey is the issue's position in a list ordered by s: the value sorted on (last seen
// in microseconds since 1970, or reports) and the ID.
func (s IssueSort) SortKey(is Issue) string {
	v := is.LastSeen.UnixMicro()
	if s == ByReports {
		v = is.Reports
	}
	return strconv.FormatInt(v, 10) + "/" + is.ID
}

// ParseSortKey reads a SortKey back; ok is false for anything SortKey does not make.
func ParseSortKey(key string) (value int64, id string, ok bool) {
	num, id, found := strings.Cut(key, "/")
	v, err := strconv.ParseInt(num, 10, 64)
	if !found || err != nil || !ValidIssueID(id) {
		return 0, "", false
	}
	return v, id, true
}
