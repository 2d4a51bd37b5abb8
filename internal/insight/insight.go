// Package insight reads a tenant's error reports as a whole (issue 11, error-report
// insights): the filters of the tenant-wide report list, the streamed download of every
// report as CSV or JSON in constant memory, and the health of each image version
// (crash-free devices and crashes per device-hour), which the staged-rollout gate reads.
//
// Everything it reads goes through store.Tx.ForTenant, so a tenant's figures and
// downloads hold only its own reports (rule 3; attacked by storetest's
// ReportInsights/ListTenantSeesOnlyItsTenant and mgmt's TestAPI_CrossTenantIsNotFound).
// Text in a report is the device's: the CSV download neutralises cells a spreadsheet would
// run as formulas (rule 5; attacked by TestExportCSV_NeutralisesFormulas).
//
// The functions are safe for concurrent use; each call opens its own read transactions.
package insight

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
)

// FilterParams are the query parameters ParseFilter reads, in the order the OpenAPI
// document lists them.
var FilterParams = []string{"product", "group", "device", "kind", "image_path", "image_version", "since", "until"}

// ParseFilter reads the report filters of a query string: product and group IDs (group
// needs product), a device ID, a kind, an image path and version, and since and until as
// RFC 3339 times bounding when the service received each report (since inclusive, until
// exclusive). Every bad value is reported, each with its field; an unknown parameter is not
// a filter and is left to the caller.
func ParseFilter(q url.Values) (store.ReportFilter, error) {
	var f store.ReportFilter
	var v problem.Validation
	one := func(name string) string {
		vals := q[name]
		if len(vals) > 1 {
			v.Add(name, "repeated_parameter", "%s may be given once", name)
		}
		if len(vals) == 0 {
			return ""
		}
		return vals[0]
	}
	if s := one("product"); s != "" {
		if !validID(s) {
			v.Add("product", "invalid_product", "product must be a product ID")
		}
		f.ProductID = product.ID(s)
	}
	if s := one("group"); s != "" {
		if !validID(s) {
			v.Add("group", "invalid_group", "group must be a device group ID")
		}
		if f.ProductID == "" {
			v.Add("group", "group_needs_product", "group needs product: a device group belongs to one product")
		}
		f.GroupID = product.GroupID(s)
	}
	if s := one("device"); s != "" {
		if !identity.ValidID(s) {
			v.Add("device", "invalid_device", "device must be a device ID, 64 lower-case hex digits")
		}
		f.DeviceID = device.ID(s)
	}
	if s := one("kind"); s != "" {
		if !slices.Contains(errreport.Kinds, errreport.Kind(s)) {
			v.Add("kind", "invalid_kind", "kind must be one of %s", kindList())
		}
		f.Kind = errreport.Kind(s)
	}
	// The image filters follow the report's own rules (errreport.Validate): a value no
	// report can hold is a mistake, not an empty answer.
	if s := one("image_path"); s != "" {
		if err := (errreport.Report{ImagePath: s}).Validate(); hasField(err, "image_path") {
			v.Add("image_path", "invalid_image_path", "image_path must be an image path apps/<name>/<version> or os/<name>/<version>")
		}
		f.ImagePath = s
	}
	if s := one("image_version"); s != "" {
		if err := (errreport.Report{ImageVersion: s}).Validate(); hasField(err, "image_version") {
			v.Add("image_version", "invalid_image_version", "image_version must be printable ASCII without spaces, at most %d bytes", errreport.MaxVersionBytes)
		}
		f.ImageVersion = s
	}
	f.Since = parseTime(&v, "since", one("since"))
	f.Until = parseTime(&v, "until", one("until"))
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		v.Add("until", "empty_time_range", "until must be after since")
	}
	return f, v.Err()
}

func parseTime(v *problem.Validation, name, s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() < 1970 || t.Year() > 9999 {
		v.Add(name, "invalid_"+name, "%s must be a time in RFC 3339 (2026-01-02T15:04:05Z)", name)
		return time.Time{}
	}
	return t.UTC()
}

// validID accepts the shape of moat's identifiers (prefix_base32), bounded, so that a
// filter value never reaches SQL unchecked in length.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' && r != '-'
	})
}

func hasField(err error, field string) bool {
	if err == nil {
		return false
	}
	p := problem.From(err)
	if p.Field == field {
		return true
	}
	for _, fe := range p.Fields {
		if fe.Field == field {
			return true
		}
	}
	return false
}

func kindList() string {
	s := make([]string, len(errreport.Kinds))
	for i, k := range errreport.Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// DecodeCursor reads a page position that PagePosition made: the After of a store.Page
// that httpapi.ParsePage decoded from its page token. It is the receive time in
// microseconds, the device ID and the report ID (at most 118 bytes, within the token's 128).
func DecodeCursor(after string) (store.ReportCursor, error) {
	if after == "" {
		return store.ReportCursor{}, nil
	}
	bad := &problem.Error{Kind: problem.Invalid, Code: "invalid_page_token", Field: "page_token",
		Detail: "page_token is not one this server returned"}
	parts := strings.Split(after, " ")
	if len(parts) != 3 {
		return store.ReportCursor{}, bad
	}
	us, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || !identity.ValidID(parts[1]) || !errreport.ValidID(parts[2]) {
		return store.ReportCursor{}, bad
	}
	return store.ReportCursor{ReceivedAt: time.UnixMicro(us).UTC(), DeviceID: device.ID(parts[1]), ID: parts[2]}, nil
}

// cursorToken returns the raw position (before the page token's base64) of c, for
// httpapi.ListOf, which encodes it.
func cursorToken(c store.ReportCursor) string {
	return fmt.Sprintf("%d %s %s", c.ReceivedAt.UnixMicro(), c.DeviceID, c.ID)
}

// PagePosition is the raw page position of r: what httpapi.ListOf encodes as the next page
// token and DecodeCursor reads back.
func PagePosition(r store.TenantReport) string { return cursorToken(r.Cursor()) }
