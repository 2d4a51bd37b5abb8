package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newErrorIssues(env *Env) *ffcli.Command {
	var product, kind, since, sort string
	var limit int
	return newVerb(env, "error-report", verb{
		name:   "issues",
		short:  "List the tenant's error issues: reports grouped by signature, most recently seen first.",
		tenant: true,
		long: `Lists the tenant's error issues: its devices' reports grouped by signature, with how many
reports and devices each has, when it was last seen and the newest report's message. ISSUE is
the ID 'moat error-report show' takes. The figures count the reports the server still keeps.

--product keeps the issues of the apps published for the product; --kind one kind of report
(app_crash, update_failed, attestation_refused, capability_denied, agent); --since the issues
seen at or after a time (RFC 3339) or within a duration before now (24h, 7d).

EXAMPLES
  moat error-report issues
  moat error-report issues --product DW100 --since 7d
  moat error-report issues --kind app_crash --sort reports
  moat error-report issues -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&product, "product", "", "only the issues of the `PRODUCT`'s apps")
			fs.StringVar(&kind, "kind", "", "only issues of this `KIND` of report")
			fs.StringVar(&since, "since", "", "only issues seen since `TIME` (RFC 3339) or within a duration before now (24h, 7d)")
			fs.StringVar(&sort, "sort", "last_seen", "order: last_seen (most recent first) or reports (most reported first)")
			fs.IntVar(&limit, "limit", 50, "show at most `N` issues (1 to 1000)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if limit < 1 || limit > 1000 {
				return usagef("--limit must be from 1 to 1000, got %d", limit)
			}
			if sort != "last_seen" && sort != "reports" {
				return usagef("--sort must be last_seen or reports, got %q", clip(sort))
			}
			opts := client.ErrorIssueOptions{ListOptions: client.ListOptions{Limit: limit}, Product: product, Kind: kind, Sort: sort}
			if since != "" {
				t, err := parseSince("since", since, time.Now())
				if err != nil {
					return err
				}
				opts.Since = t
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			page, err := c.ListErrorIssues(ctx, tenant, opts)
			if err != nil {
				return err
			}
			if page.NextPageToken != "" {
				s.note("Showing %d issues; --limit shows more.", limit)
			}
			return printList(s, page.Items, []string{"ISSUE", "KIND", "IMAGE", "REPORTS", "DEVICES", "LAST SEEN", "MESSAGE"}, func(is client.ErrorIssue) []string {
				image := is.ImageName
				if image == "" {
					image = "-"
				}
				return []string{is.ID, is.Kind, image, strconv.FormatInt(is.Reports, 10), strconv.FormatInt(is.Devices, 10),
					fmtTime(is.LastSeen), clipRunes(firstLine(is.Message), 60)}
			})
		},
	})
}

func newErrorIssueShow(env *Env) *ffcli.Command {
	var reports int
	return newVerb(env, "error-report", verb{
		name:   "show",
		args:   "ISSUE",
		short:  "Show an error issue: its signature, versions affected, reports per day and newest reports.",
		tenant: true,
		long: `Shows an error issue: the signature its reports share, how many reports and devices, when
it was first and last seen, the image versions its reports named, its reports per day over
the last 30 days, and its newest reports. -o json prints the issue as the API returns it.

EXAMPLES
  moat error-report show iss_3f9a0c1d2e4b5a6978f0
  moat error-report show iss_3f9a0c1d2e4b5a6978f0 --reports 20
  moat error-report show iss_3f9a0c1d2e4b5a6978f0 -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&reports, "reports", 5, "show the issue's newest `N` reports (0 to 1000)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "ISSUE"); err != nil {
				return err
			}
			id := args[0]
			if !validIssueID(id) {
				return usagef("ISSUE must be an issue ID as 'moat error-report issues' shows it (iss_ and 20 hex digits), got %q", clip(id))
			}
			if reports < 0 || reports > 1000 {
				return usagef("--reports must be from 0 to 1000, got %d", reports)
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			d, err := c.GetErrorIssue(ctx, tenant, id)
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(d)
			}
			var recent []client.ErrorReportRecord
			if reports > 0 {
				page, err := c.ListErrorIssueReports(ctx, tenant, id, client.ListOptions{Limit: reports})
				if err != nil {
					return err
				}
				recent = page.Items
			}
			return printIssue(s, d, recent)
		},
	})
}

func printIssue(s *session, d client.ErrorIssueDetail, recent []client.ErrorReportRecord) error {
	is := d.Issue
	var versions []string
	for _, v := range d.Versions {
		versions = append(versions, fmt.Sprintf("%s (%d)", v.Version, v.Reports))
	}
	if len(versions) == 0 {
		versions = []string{"-"}
	}
	fields := [][2]string{
		{"Issue", is.ID},
		{"Kind", is.Kind},
		{"Image", orDash(is.ImageName)},
		{"Reports", strconv.FormatInt(is.Reports, 10)},
		{"Devices", strconv.FormatInt(is.Devices, 10)},
		{"First seen", fmtTime(is.FirstSeen)},
		{"Last seen", fmtTime(is.LastSeen)},
		{"Versions", strings.Join(versions, ", ")},
		{"Message", orDash(firstLine(is.Message))},
	}
	if err := s.show(d, fields); err != nil {
		return err
	}
	w := s.env.Stdout
	fmt.Fprintln(w, "\nSignature:")
	for line := range strings.SplitSeq(is.Signature, "\n") {
		fmt.Fprintln(w, "  "+clean(line))
	}
	fmt.Fprintln(w, "\nReports per day (UTC, last 30 days):")
	var peak int64
	for _, day := range d.Days {
		peak = max(peak, day.Reports)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, day := range d.Days {
		if day.Reports == 0 {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", day.Day, day.Reports, strings.Repeat("#", int(1+day.Reports*29/max(peak, 1))))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(recent) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nNewest reports:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  RECEIVED\tDEVICE\tVERSION\tSUMMARY")
	for _, r := range recent {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", fmtTime(r.ReceivedAt), clean(r.DeviceID), clean(orDash(r.Report.ImageVersion)), clean(summary(r.Report)))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// validIssueID is errreport.ValidIssueID; the CLI speaks only through the client.
func validIssueID(s string) bool {
	if len(s) != len("iss_")+20 || !strings.HasPrefix(s, "iss_") {
		return false
	}
	return !strings.ContainsFunc(s[4:], func(r rune) bool { return (r < '0' || r > '9') && (r < 'a' || r > 'f') })
}
