package cli

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"io/fs"
	"os"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

// The owners' side of `moat cloud` for the manufacturer's staff (issue 14): claim codes
// made at manufacture, sale records, service requests and part reservations.

// maxClaimCodeDevices is the cloud's limit per request (cloudapi.MaxClaimCodeDevices);
// the CLI sends larger lists in batches of it.
const maxClaimCodeDevices = 1000

func newCloudClaimCodes(env *Env) *ffcli.Command {
	return subNoun(newNoun(env, "cloud claim-codes", "Make the claim codes printed on appliances at manufacture.",
		`A claim code lets an owner link an appliance to their account in the owners' portal; it
works once. The cloud keeps only a hash of each code: the codes are printed once, into
the CSV file given with --out, for the label printer. Making codes for a device again
replaces its previous code. Needs the Contributor or Administrator role.

EXAMPLES
  moat cloud claim-codes create --product DW100 --devices serials.txt --out codes.csv`,
		newCloudClaimCodesCreate(env)))
}

func newCloudClaimCodesCreate(env *Env) *ffcli.Command {
	var cc cloudConn
	var product, devicesFile, out string
	var devices stringList
	var force bool
	return newVerb(env, "cloud claim-codes", verb{
		name:  "create",
		short: "Make claim codes for devices and write them to a CSV file (device,code).",
		long: `Makes a fresh claim code for each device (--device, repeated, or --devices FILE with one
device ID a line) and writes device,code lines to --out, readable by its owner only
(mode 0600). An existing file is not overwritten without --force. The codes are not
shown again: keep the file until the labels are printed, then delete it.

EXAMPLES
  moat cloud claim-codes create --product DW100 --device 3f9a...e1 --out codes.csv
  moat cloud claim-codes create --product DW100 --devices serials.txt --out codes.csv --force`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&product, "product", "", "the devices' `PRODUCT` (required)")
			fs.Var(&devices, "device", "a device `ID` (repeatable)")
			fs.StringVar(&devicesFile, "devices", "", "`FILE` of device IDs, one a line")
			fs.StringVar(&out, "out", "", "CSV `FILE` to write device,code lines to (required)")
			fs.BoolVar(&force, "force", false, "overwrite --out if it exists")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 0 {
				return usagef("moat cloud claim-codes create takes no arguments")
			}
			if product == "" || out == "" {
				return usagef("--product and --out are required")
			}
			ids := append([]string(nil), devices...)
			if devicesFile != "" {
				more, err := readDeviceList(devicesFile)
				if err != nil {
					return usagef("--devices: %v", err)
				}
				ids = append(ids, more...)
			}
			if len(ids) == 0 {
				return usagef("give the devices with --device or --devices")
			}
			// Open the file before making codes: codes that cannot be written are lost.
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(out, flags, 0o600)
			if errors.Is(err, fs.ErrExist) {
				return usagef("--out %s exists; give --force to overwrite it", out)
			}
			if err != nil {
				return err
			}
			defer f.Close()
			if err := f.Chmod(0o600); err != nil { // an existing file overwritten with --force
				return err
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			w := csv.NewWriter(f)
			_ = w.Write([]string{"device", "code"})
			n := 0
			for start := 0; start < len(ids); start += maxClaimCodeDevices {
				batch := ids[start:min(start+maxClaimCodeDevices, len(ids))]
				got, err := c.CreateClaimCodes(ctx, client.ClaimCodesCreate{Product: product, Devices: batch})
				if err != nil {
					w.Flush()
					if n > 0 {
						s.note("%d codes were made and written to %s before the error.", n, out)
					}
					return err
				}
				for _, cd := range got.Items {
					_ = w.Write([]string{cd.Device, cd.Code})
				}
				n += len(got.Items)
			}
			w.Flush()
			if err := w.Error(); err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			s.note("Wrote %d claim codes to %s; they are not shown again.", n, out)
			return nil
		},
	})
}

// readDeviceList reads device IDs, one a line; blank lines and # comments are skipped.
func readDeviceList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ids = append(ids, line)
		if len(ids) > 1_000_000 {
			return nil, errors.New("more than a million devices")
		}
	}
	return ids, sc.Err()
}

func newCloudSales(env *Env) *ffcli.Command {
	return subNoun(newNoun(env, "cloud sales", "Record appliances' sales (they start the warranty).",
		`A sale record names the day an appliance was sold, which starts its warranty, and the shop
that sold it, which becomes its first repair shop. Needs the Contributor or
Administrator role.

EXAMPLES
  moat cloud sales record --device 3f9a...e1 --product DW100 --date 2026-05-01 --shop fixit-berlin`,
		newCloudSalesRecord(env)))
}

func newCloudSalesRecord(env *Env) *ffcli.Command {
	var cc cloudConn
	var device, product, date, shop string
	return newVerb(env, "cloud sales", verb{
		name:  "record",
		short: "Record or correct an appliance's sale.",
		long: `Records the sale of one appliance; recording it again corrects it.

EXAMPLES
  moat cloud sales record --device 3f9a...e1 --product DW100 --date 2026-05-01 --shop fixit-berlin`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&device, "device", "", "the device `ID` (required)")
			fs.StringVar(&product, "product", "", "its `PRODUCT` (required)")
			fs.StringVar(&date, "date", "", "the sale's `DATE` (2026-05-01) or RFC 3339 time (required)")
			fs.StringVar(&shop, "shop", "", "the selling shop's `ID` (required)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 0 {
				return usagef("moat cloud sales record takes no arguments")
			}
			if device == "" || product == "" || date == "" || shop == "" {
				return usagef("--device, --product, --date and --shop are required")
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			sl, err := c.RecordSale(ctx, client.SaleRecord{Device: device, Product: product, SoldAt: date, Shop: shop})
			if err != nil {
				return err
			}
			return s.show(sl, [][2]string{{"Device", sl.Device}, {"Product", sl.Product}, {"Sold", sl.SoldAt.Format("2006-01-02")}, {"Shop", sl.Shop}})
		},
	})
}

func newCloudServiceRequests(env *Env) *ffcli.Command {
	return subNoun(newNoun(env, "cloud service-requests", "List service requests and change their state.",
		`Service requests come from owners (the portal), from the rules' actions and from support.
Support schedules them, marks them done or cancels them, with a note the owner sees.
Changing one needs the Contributor or Administrator role.

EXAMPLES
  moat cloud service-requests list --state open
  moat cloud service-requests update 12 --state scheduled --note "Tuesday 9:00-12:00"`,
		newCloudServiceRequestsList(env), newCloudServiceRequestsUpdate(env)))
}

func newCloudServiceRequestsList(env *Env) *ffcli.Command {
	var cc cloudConn
	var state, device string
	var limit int
	return newVerb(env, "cloud service-requests", verb{
		name:  "list",
		short: "List service requests, newest first.",
		long: `Lists service requests, newest first.

EXAMPLES
  moat cloud service-requests list --state open
  moat cloud service-requests list --device 3f9a...e1 -o json`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&state, "state", "", "open, scheduled, done or cancelled; default all")
			fs.StringVar(&device, "device", "", "only this `DEVICE`")
			fs.IntVar(&limit, "limit", 100, "show at most `N` requests (1 to 1000)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 0 {
				return usagef("moat cloud service-requests list takes no arguments")
			}
			if limit < 1 || limit > 1000 {
				return usagef("--limit must be from 1 to 1000, got %d", limit)
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			page, err := c.ListServiceRequests(ctx, client.ServiceRequestQuery{State: state, Device: device, Limit: limit})
			if err != nil {
				return err
			}
			if page.NextPageToken != "" {
				s.note("Showing the newest %d requests; --limit shows more.", limit)
			}
			return printList(s, page.Items, []string{"ID", "CREATED", "STATE", "SOURCE", "DEVICE", "ALERT", "DESCRIPTION"}, func(r client.ServiceRequest) []string {
				return []string{r.ID, fmtTime(r.CreatedAt), r.State, r.Source, r.Device, dash(r.AlertID), oneLine(r.Description)}
			})
		},
	})
}

// oneLine keeps a table row on one line: text an owner wrote may hold newlines.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func newCloudServiceRequestsUpdate(env *Env) *ffcli.Command {
	var cc cloudConn
	var state, note string
	return newVerb(env, "cloud service-requests", verb{
		name:  "update",
		args:  "ID",
		short: "Change a service request's state, with a note to the owner.",
		long: `Sets a service request's state (scheduled, done or cancelled; open again) and the note its
owner sees. A done or cancelled request cannot change any more.

EXAMPLES
  moat cloud service-requests update 12 --state scheduled --note "Tuesday 9:00-12:00"
  moat cloud service-requests update 12 --state done`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&state, "state", "", "scheduled, done, cancelled or open (required)")
			fs.StringVar(&note, "note", "", "a `NOTE` to the owner")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) != 1 {
				return usagef("moat cloud service-requests update takes one ID")
			}
			if state == "" {
				return usagef("--state is required")
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			r, err := c.UpdateServiceRequest(ctx, args[0], client.ServiceRequestUpdate{State: state, Note: note})
			if err != nil {
				return err
			}
			return s.show(r, [][2]string{{"ID", r.ID}, {"Device", r.Device}, {"State", r.State}, {"Note", r.Note}, {"Updated", fmtTime(r.UpdatedAt)}})
		},
	})
}

func newCloudReservations(env *Env) *ffcli.Command {
	return subNoun(newNoun(env, "cloud reservations", "List warranty part reservations.",
		`When an alert's actions find an appliance under warranty, the cloud asks the owner's repair
shop to reserve the part; each outcome is recorded: reserved (with the shop's
reference), or why not (out_of_stock, out_of_warranty, no_shop, failed).

EXAMPLES
  moat cloud reservations list --state reserved`,
		newCloudReservationsList(env)))
}

func newCloudReservationsList(env *Env) *ffcli.Command {
	var cc cloudConn
	var state, device string
	var limit int
	return newVerb(env, "cloud reservations", verb{
		name:  "list",
		short: "List part reservations, newest first.",
		long: `Lists warranty part reservations and their outcomes, newest first.

EXAMPLES
  moat cloud reservations list
  moat cloud reservations list --device 3f9a...e1 -o json`,
		flags: func(fs *flag.FlagSet) {
			cc.register(fs)
			fs.StringVar(&state, "state", "", "reserved, out_of_stock, out_of_warranty, no_shop or failed; default all")
			fs.StringVar(&device, "device", "", "only this `DEVICE`")
			fs.IntVar(&limit, "limit", 100, "show at most `N` reservations (1 to 1000)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 0 {
				return usagef("moat cloud reservations list takes no arguments")
			}
			if limit < 1 || limit > 1000 {
				return usagef("--limit must be from 1 to 1000, got %d", limit)
			}
			c, err := cc.client(s)
			if err != nil {
				return err
			}
			page, err := c.ListReservations(ctx, client.ReservationQuery{State: state, Device: device, Limit: limit})
			if err != nil {
				return err
			}
			return printList(s, page.Items, []string{"ID", "CREATED", "STATE", "DEVICE", "PART", "SHOP", "REFERENCE", "REASON"}, func(r client.Reservation) []string {
				return []string{r.ID, fmtTime(r.CreatedAt), r.State, r.Device, r.Part, r.Shop, dash(r.Reference), oneLine(r.Reason)}
			})
		},
	})
}
