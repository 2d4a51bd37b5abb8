package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

// maxErrorReports is what a device keeps on the server (store.MaxErrorReportsPerDevice).
const maxErrorReports = 10000

func newDeviceErrorReports(env *Env) *ffcli.Command {
	var limit int
	return newVerb(env, "device", verb{
		name:   "error-reports",
		args:   "ID",
		short:  "List a device's error reports, newest first: app crashes, failed updates, refusals.",
		tenant: true,
		long: `Lists the error reports the device uploaded, newest received first: application crashes
(exit code or signal, uptime, the last lines of standard error), failed updates with the
step that failed, refused attestations, capabilities the application was denied, and the
agent's own reports (reports it had to drop while its queue was full). TIME is the
device's clock; IMAGE is what ran. -o json prints every field, the whole standard-error
tail included. The server keeps a device's newest 10000 reports.

EXAMPLES
  moat device error-reports 3f9a...e1
  moat device error-reports 3f9a...e1 --limit 500
  moat device error-reports 3f9a...e1 -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&limit, "limit", 50, "show at most `N` reports, the newest (1 to 10000)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			id, err := deviceArg(args)
			if err != nil {
				return err
			}
			if limit < 1 || limit > maxErrorReports {
				return usagef("--limit must be from 1 to %d, got %d", maxErrorReports, limit)
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			items := []client.ErrorReportRecord{}
			more := false
			opts := client.ListOptions{Limit: min(limit, 1000)}
			for {
				page, err := c.ListErrorReports(ctx, tenant, id, opts)
				if err != nil {
					return err
				}
				items = append(items, page.Items...)
				if len(items) >= limit || page.NextPageToken == "" {
					more = len(items) > limit || page.NextPageToken != ""
					break
				}
				opts.PageToken = page.NextPageToken
			}
			items = items[:min(len(items), limit)]
			if more {
				s.note("Showing the newest %d reports; --limit shows more.", limit)
			}
			return printList(s, items, []string{"TIME", "KIND", "IMAGE", "SUMMARY"}, func(r client.ErrorReportRecord) []string {
				image := r.Report.ImagePath
				if image == "" {
					image = "-"
				}
				return []string{fmtTime(r.Report.At), r.Report.Kind, image, summary(r.Report)}
			})
		},
	})
}

// summary says in one line what a report is about: for a crash how and when it ended and
// the last line of standard error; otherwise what failed, the reason code and the first
// line of the message.
func summary(r client.ErrorReport) string {
	var parts []string
	add := func(format string, args ...any) {
		if s := fmt.Sprintf(format, args...); s != "" {
			parts = append(parts, s)
		}
	}
	switch r.Kind {
	case "app_crash":
		how := r.Signal
		if r.ExitCode != nil {
			how = fmt.Sprintf("exit %d", *r.ExitCode)
		}
		add("%s after %ds", how, r.UptimeSeconds)
		add("%s", r.Code)
		if line := lastLine(r.StderrTail); line != "" {
			add("%s", line)
		} else {
			add("%s", firstLine(r.Message))
		}
	default:
		switch r.Kind {
		case "update_failed":
			add("%s of %s failed", r.Step, r.Target)
		case "capability_denied":
			add("%s denied", r.Capability)
		case "agent":
			if r.Dropped > 0 {
				add("%d reports dropped", r.Dropped)
			}
		}
		add("%s", r.Code)
		add("%s", firstLine(r.Message))
	}
	return clipRunes(strings.Join(parts, ": "), 120)
}

// clipRunes cuts s to at most n characters.
func clipRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-3]) + "..."
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n\t ")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
