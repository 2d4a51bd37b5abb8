package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

// maxUpdateHistory is how many update states the server keeps per device.
const maxUpdateHistory = 200

func newDeviceUpdateHistory(env *Env) *ffcli.Command {
	var limit int
	return newVerb(env, "device", verb{
		name:   "update-history",
		args:   "ID",
		short:  "List the steps of a device's updates as it reported them, newest first.",
		tenant: true,
		long: `Lists the update states the device reported, newest first by its clock: a new assignment
(assigned), the download with the bytes that arrived (downloading), the image installed on
trial (installed), and how it ended: committed, rolled_back or failed with the reason, or
deferred. 'moat device show' shows the latest state and when the device was last seen. The
server keeps a device's newest 200 states.

EXAMPLES
  moat device update-history 3f9a...e1
  moat device update-history 3f9a...e1 --limit 10
  moat device update-history 3f9a...e1 -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&limit, "limit", 50, fmt.Sprintf("show at most `N` states, the newest (1 to %d)", maxUpdateHistory))
		},
		run: func(ctx context.Context, s *session, args []string) error {
			id, err := deviceArg(args)
			if err != nil {
				return err
			}
			if limit < 1 || limit > maxUpdateHistory {
				return usagef("--limit must be from 1 to %d, got %d", maxUpdateHistory, limit)
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			page, err := c.ListUpdateStates(ctx, tenant, id, client.ListOptions{Limit: limit})
			if err != nil {
				return err
			}
			if page.NextPageToken != "" {
				s.note("Showing the newest %d states; --limit shows more.", limit)
			}
			items := page.Items
			if items == nil {
				items = []client.UpdateStateRecord{}
			}
			return printList(s, items, []string{"TIME", "STATE", "TARGET", "DETAIL"}, func(r client.UpdateStateRecord) []string {
				return []string{fmtTime(r.Report.At), r.Report.State, r.Report.Target, stateDetail(r.Report)}
			})
		},
	})
}

// stateDetail sums up what a state adds to its name: download progress, the reason, the
// deferral.
func stateDetail(r client.UpdateState) string {
	switch {
	case r.State == client.UpdateDownloading && r.BytesTotal > 0:
		return fmt.Sprintf("%d of %d bytes (%d%%)", r.BytesDone, r.BytesTotal, r.BytesDone*100/r.BytesTotal)
	case r.DeferredUntil != nil:
		return "until " + fmtTime(*r.DeferredUntil) + reason(r)
	case r.Code != "":
		return r.Code + reason(r)
	}
	return "-"
}

func reason(r client.UpdateState) string {
	if r.Message == "" {
		return ""
	}
	return ": " + clipRunes(firstLine(r.Message), 80)
}

// updateStateField is the "Update state" line of 'moat device show'.
func updateStateField(d client.Device) string {
	if d.UpdateState == "" || d.UpdateStateAt == nil {
		return "none reported"
	}
	return d.UpdateState + " at " + fmtTime(*d.UpdateStateAt)
}

// lastSeenField is the "Last seen" line of 'moat device show'.
func lastSeenField(d client.Device) string {
	if d.LastSeenAt == nil {
		return "never"
	}
	return fmtTime(*d.LastSeenAt) + " (to within 5 minutes)"
}
