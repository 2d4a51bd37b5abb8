package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

// newErrorReportCmd is `moat error-report`: the tenant's error reports as a whole (the
// reports of one device: `moat device error-reports ID`).
func newErrorReportCmd(env *Env) *ffcli.Command {
	return newNoun(env, "error-report", "List, group, download and measure the tenant's error reports.",
		`Works with the error reports of all the tenant's devices: list them with filters, see them
grouped into issues by their signature (kind, image name, exit code or signal, code, and the
message with numbers, addresses, IDs and paths replaced), download them as CSV or JSON, and
see the health of each image version (crash-free devices and crashes per device-hour), the
figures a staged rollout's gate reads. Reports are kept for the server's
--error-report-retention (90 days by default). The reports of one device: 'moat device
error-reports ID'.

EXAMPLES
  moat error-report list --product DW100 --since 24h
  moat error-report issues --product DW100 --since 7d
  moat error-report show iss_3f9a0c1d2e4b5a6978f0
  moat error-report download --format csv --output reports.csv
  moat error-report health --product DW100`,
		errorReportVerbs(env)...)
}

// errorReportVerbs are the verbs of `moat error-report`.
func errorReportVerbs(env *Env) []*ffcli.Command {
	return []*ffcli.Command{newErrorReportList(env), newErrorIssues(env), newErrorIssueShow(env), newErrorReportDownload(env), newErrorReportHealth(env)}
}

// reportFlags are the report filters list and download share.
type reportFlags struct {
	product, group, device, kind, image, version, since, until string
}

func (r *reportFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.product, "product", "", "only devices now in product `ID|NAME`")
	fs.StringVar(&r.group, "group", "", "only devices now in device group `ID|NAME` of --product")
	fs.StringVar(&r.device, "device", "", "only the device `ID`")
	fs.StringVar(&r.kind, "kind", "", "only reports of `KIND`: app_crash, update_failed, attestation_refused, capability_denied or agent")
	fs.StringVar(&r.image, "image", "", "only reports naming the image `PATH` (apps/<name>/<version> or os/<name>/<version>)")
	fs.StringVar(&r.version, "image-version", "", "only reports naming the image `VERSION`")
	fs.StringVar(&r.since, "since", "", "only reports received at or after `TIME` (RFC 3339, or a duration before now such as 24h)")
	fs.StringVar(&r.until, "until", "", "only reports received before `TIME` (RFC 3339, or a duration before now)")
}

// filter resolves the flags into the API's filter: names to IDs, durations to times.
func (r *reportFlags) filter(ctx context.Context, s *session, tenant string, now time.Time) (client.ErrorReportFilter, error) {
	var f client.ErrorReportFilter
	var err error
	if f.Since, err = parseSince("since", r.since, now); err != nil {
		return f, err
	}
	if f.Until, err = parseSince("until", r.until, now); err != nil {
		return f, err
	}
	if r.group != "" && r.product == "" {
		return f, usagef("--group needs --product: a device group belongs to one product")
	}
	f.Device, f.Kind, f.ImagePath, f.ImageVersion = strings.ToLower(r.device), r.kind, r.image, r.version
	if r.product != "" {
		prod, err := s.findProduct(ctx, tenant, r.product)
		if err != nil {
			return f, err
		}
		f.Product = prod.ID
		if r.group != "" {
			g, err := s.findGroup(ctx, tenant, prod, r.group)
			if err != nil {
				return f, err
			}
			f.Group = g.ID
		}
	}
	return f, nil
}

// parseSince reads a time: RFC 3339, or a duration before now in Go's syntax ("24h") or
// in days ("7d").
func parseSince(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if n, ok := strings.CutSuffix(v, "d"); ok {
		if d, err := strconv.Atoi(n); err == nil && d > 0 && d <= 36500 {
			return now.AddDate(0, 0, -d), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("--%s must be a time in RFC 3339 (2026-01-02T15:04:05Z) or a duration before now (24h, 7d), got %q", name, clip(v))
}

func newErrorReportList(env *Env) *ffcli.Command {
	var rf reportFlags
	var limit int
	return newVerb(env, "error-report", verb{
		name:   "list",
		short:  "List the tenant's error reports, newest first, filtered by product, group, kind and time.",
		tenant: true,
		long: `Lists the error reports of all the tenant's devices, newest received first: the time the
service received each, the device, its kind, the image that ran and a one-line summary.
--product and --group select by the group a device is in now. --since and --until take a
time or a duration before now. -o json prints every field, the product and group IDs and
the whole standard-error tail included.

EXAMPLES
  moat error-report list
  moat error-report list --product DW100 --group Production --since 24h
  moat error-report list --kind app_crash --image apps/dw100-app/2.0.0 -o json`,
		flags: func(fs *flag.FlagSet) {
			rf.register(fs)
			fs.IntVar(&limit, "limit", 50, "show at most `N` reports, the newest (1 to 10000; 'download' has them all)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if limit < 1 || limit > maxErrorReports {
				return usagef("--limit must be from 1 to %d, got %d", maxErrorReports, limit)
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			f, err := rf.filter(ctx, s, tenant, time.Now())
			if err != nil {
				return err
			}
			items := []client.TenantErrorReport{}
			more := false
			opts := client.ListOptions{Limit: min(limit, 1000)}
			for {
				page, err := c.ListTenantErrorReports(ctx, tenant, f, opts)
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
				s.note("Showing the newest %d reports; --limit shows more, 'moat error-report download' all of them.", limit)
			}
			return printList(s, items, []string{"RECEIVED", "DEVICE", "KIND", "IMAGE", "SUMMARY"}, func(r client.TenantErrorReport) []string {
				image := r.Report.ImagePath
				if image == "" {
					image = "-"
				}
				return []string{fmtTime(r.ReceivedAt), shortID(r.DeviceID), r.Report.Kind, image, summary(r.Report)}
			})
		},
	})
}

// shortID is the first 12 hex digits of a device ID, enough to tell a fleet's devices
// apart in a table (-o json has the whole ID).
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func newErrorReportDownload(env *Env) *ffcli.Command {
	var rf reportFlags
	var format, output string
	var force bool
	return newVerb(env, "error-report", verb{
		name:   "download",
		short:  "Download the tenant's error reports, one row per report, as CSV or JSON.",
		tenant: true,
		long: `Downloads every error report the filters select, newest received first, into FILE: as CSV
(one header line, then one line per report; the columns are in docs/error-reports.md) or
as one JSON array of the objects 'list -o json' prints. The download streams: a million
reports need no more memory than a few. It is written to a temporary file beside FILE and
renamed when complete, so FILE is never half written; an existing FILE is kept unless
--force is given. Cells a spreadsheet would run as a formula (starting with =, +, -, @)
start with a single quote.

EXAMPLES
  moat error-report download --output reports.csv
  moat error-report download --format json --output crashes.json --kind app_crash --since 168h
  moat error-report download --product DW100 --group Production --output dw100.csv --force`,
		flags: func(fs *flag.FlagSet) {
			rf.register(fs)
			fs.StringVar(&format, "format", "csv", "file format: csv or json")
			fs.StringVar(&output, "output", "", "write to `FILE` (required)")
			fs.BoolVar(&force, "force", false, "replace FILE when it exists")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if format != "csv" && format != "json" {
				return usagef("--format must be csv or json, got %q", format)
			}
			if output == "" {
				return usagef("--output FILE is required")
			}
			if _, err := os.Lstat(output); err == nil && !force {
				return &cliError{code: ExitError, msg: fmt.Sprintf("%s exists", output), hint: "give --force to replace it"}
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			f, err := rf.filter(ctx, s, tenant, time.Now())
			if err != nil {
				return err
			}
			n, err := downloadTo(output, force, func(w *os.File) (int64, error) {
				return c.ExportErrorReports(ctx, tenant, format, f, w)
			})
			if err != nil {
				return err
			}
			s.done("Wrote %s (%s bytes).", output, strconv.FormatInt(n, 10))
			return nil
		},
	})
}

// downloadTo writes a download to a temporary file beside path, syncs it and puts it in
// place: renamed over path with force, else linked, which fails rather than replace a
// file that appeared meanwhile. Nothing is left behind on failure.
func downloadTo(path string, force bool, write func(*os.File) (int64, error)) (int64, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return 0, &cliError{code: ExitError, msg: fmt.Sprintf("create a file beside %s: %v", path, err)}
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := write(tmp)
	if err != nil {
		return n, err
	}
	if err := tmp.Sync(); err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	if force {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); err == nil {
		err = os.Remove(tmp.Name())
	} else if errors.Is(err, os.ErrExist) {
		err = &cliError{code: ExitError, msg: fmt.Sprintf("%s exists", path), hint: "give --force to replace it"}
	}
	if err != nil {
		os.Remove(tmp.Name())
		done = true
		return n, err
	}
	done = true
	return n, nil
}

func newErrorReportHealth(env *Env) *ffcli.Command {
	var prod string
	var window time.Duration
	return newVerb(env, "error-report", verb{
		name:   "health",
		short:  "Show each image version's health: devices, crash-free devices, crashes per device-hour.",
		tenant: true,
		long: `Shows, for each OS and app image version the tenant's devices run (and each app version
that crashed in the window), over the window before now: the devices running it, those of
them with an app crash in the window, the crash-free share of devices, the crashes, the
device-hours the devices ran it, and crashes per device-hour. These are the figures a
staged rollout's gate reads; the formulas are in docs/error-reports.md ("Version
health"). "-" is a figure without a meaning (no devices, or no runtime).

EXAMPLES
  moat error-report health
  moat error-report health --product DW100 --window 24h
  moat error-report health -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&prod, "product", "", "only devices now in product `ID|NAME`, and their reports")
			fs.DurationVar(&window, "window", 168*time.Hour, "how far back the figures reach, `DURATION` from 1h to 2160h")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if window < time.Hour || window > 2160*time.Hour {
				return usagef("--window must be from 1h to 2160h, got %s", window)
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			pid := ""
			if prod != "" {
				p, err := s.findProduct(ctx, tenant, prod)
				if err != nil {
					return err
				}
				pid = p.ID
			}
			h, err := c.GetImageHealth(ctx, tenant, pid, window)
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(h)
			}
			return printList(s, h.Versions, []string{"KIND", "IMAGE", "VERSION", "DEVICES", "CRASHED", "CRASH-FREE", "CRASHES", "DEVICE-HOURS", "CRASHES/DEVICE-HOUR"},
				func(v client.VersionHealth) []string {
					return []string{v.Kind, v.Target, v.Version, strconv.Itoa(v.Devices), strconv.Itoa(v.CrashedDevices),
						fmtFigure(v.CrashFreePercent, "%.1f%%"), strconv.Itoa(v.Crashes), strconv.FormatFloat(v.DeviceHours, 'f', 1, 64),
						fmtFigure(v.CrashesPerDeviceHour, "%.4f")}
				})
		},
	})
}

// fmtFigure prints a figure that may have no meaning ("-").
func fmtFigure(v *float64, format string) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}
