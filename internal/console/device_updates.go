package console

import (
	"net/url"

	"github.com/moat-iot/moat/client"
)

// updatesPageSize is the update history's page on the device page.
const updatesPageSize = 20

// updateHistory reads a page of the device's update history (the query's updates token)
// into v, with the link to the next page.
func (q *req) updateHistory(v *deviceView) error {
	id := v.Row.Device.ID
	page, err := q.api.ListUpdateStates(q.ctx, q.tenant.ID, id, client.ListOptions{Limit: updatesPageSize, PageToken: q.r.URL.Query().Get("updates")})
	if err != nil {
		return err
	}
	v.Updates = page.Items
	if page.NextPageToken != "" {
		v.NextUpdates = q.deviceHref(id) + "?" + url.Values{"updates": {page.NextPageToken}}.Encode() + "#update-history"
	}
	return nil
}

// updateStateClass is the CSS class of an update state: failures stand out.
func updateStateClass(state string) string {
	switch state {
	case client.UpdateFailed, client.UpdateRolledBack:
		return "warn"
	case client.UpdateCommitted:
		return "ok"
	}
	return ""
}

// progress is a download's progress, "1.2 MB of 3.4 MB", or "".
func progress(done, total int64) string {
	if done == 0 && total == 0 {
		return ""
	}
	if total == 0 {
		return bytesText(done)
	}
	return bytesText(done) + " of " + bytesText(total)
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<20:
		return number(float64(n)/(1<<20)) + " MiB"
	case n >= 1<<10:
		return number(float64(n)/(1<<10)) + " KiB"
	}
	return number(float64(n)) + " B"
}
