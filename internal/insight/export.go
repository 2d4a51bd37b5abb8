package insight

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Format is a download format.
type Format string

// Download formats.
const (
	// CSV: one header line (CSVColumns), then one line per report (RFC 4180).
	CSV Format = "csv"
	// JSON: one JSON array, streamed, of the objects the report list returns.
	JSON Format = "json"
)

// ParseFormat reads the format parameter; empty is CSV.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", CSV:
		return CSV, nil
	case JSON:
		return JSON, nil
	}
	return "", &problem.Error{Kind: problem.Invalid, Code: "invalid_format", Field: "format", Detail: "format must be csv or json"}
}

// ContentType is the media type of the format.
func (f Format) ContentType() string {
	if f == JSON {
		return "application/json"
	}
	return "text/csv; charset=utf-8"
}

// CSVColumns are the CSV download's columns, in order (docs/error-reports.md, "CSV
// download", lists them; TestDocs_CSVColumns holds the two together).
var CSVColumns = []string{
	"device_id", "product_id", "group_id", "received_at", "at", "kind", "report_id",
	"image_path", "image_version", "code", "exit_code", "signal", "uptime_seconds",
	"step", "target", "capability", "dropped", "message", "stderr_tail",
}

// csvRow is r's cells in CSVColumns order, each neutralised.
func csvRow(r store.TenantReport, row []string) []string {
	p := r.Report
	exit := ""
	if p.ExitCode != nil {
		exit = strconv.Itoa(*p.ExitCode)
	}
	num := func(n int64) string {
		if n == 0 {
			return ""
		}
		return strconv.FormatInt(n, 10)
	}
	row = append(row[:0],
		string(r.DeviceID), string(r.ProductID), string(r.GroupID),
		r.ReceivedAt.UTC().Format(time.RFC3339Nano), p.At.UTC().Format(time.RFC3339Nano), string(p.Kind), p.ID,
		p.ImagePath, p.ImageVersion, p.Code, exit, p.Signal, num(p.UptimeSeconds),
		string(p.Step), p.Target, p.Capability, num(p.Dropped), p.Message, p.StderrTail)
	for i, c := range row {
		row[i] = Neutralise(c)
	}
	return row
}

// Neutralise returns a CSV cell that a spreadsheet shows as text: a cell that starts with
// =, +, -, @, a tab or a carriage return (which spreadsheets read as a formula, or strip
// to reach one) gets a single quote in front. Report text is the device's: a compromised
// device must not run a formula in a support engineer's spreadsheet (rule 5; attacked by
// TestExportCSV_NeutralisesFormulas).
func Neutralise(cell string) string {
	if cell == "" {
		return cell
	}
	switch cell[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + cell
	}
	return cell
}

// DefaultBatch is how many reports Export reads per read transaction.
const DefaultBatch = 500

// ExportOptions tune Export.
type ExportOptions struct {
	Format Format
	// Batch is how many reports are read per transaction (DefaultBatch when 0).
	Batch int
	// AfterBatch, when set, runs after each batch is written (the HTTP handler flushes the
	// response and moves its write deadline on, so a long download is not cut off while
	// it progresses). An error ends the export.
	AfterBatch func() error
}

// Export writes the tenant's reports that f selects to w, newest received first, and
// returns how many it wrote. It holds at most one batch of reports at a time: each batch
// is a keyset page (store.ErrorReports.ListTenant after the last report written) read in
// its own short read transaction, so a million reports cost the memory of one batch and
// no transaction stays open for the whole download. Reports received after the export
// started are newer than its first position and are left out; reports the store deletes
// meanwhile (the per-device bound) may be missing.
func Export(ctx context.Context, st store.Store, t tenant.ID, f store.ReportFilter, w io.Writer, o ExportOptions) (int64, error) {
	batch := o.Batch
	if batch <= 0 || batch > store.MaxLimit {
		batch = DefaultBatch
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	out := newEncoder(o.Format, bw)
	if err := out.begin(); err != nil {
		return 0, err
	}
	var n int64
	var after store.ReportCursor
	var items []store.TenantReport
	for {
		err := st.InReadTx(ctx, func(tx store.Tx) error {
			tt, err := tx.ForTenant(t)
			if err != nil {
				return err
			}
			items, err = tt.ErrorReports().ListTenant(ctx, f, after, batch)
			return err
		})
		if err != nil {
			return n, fmt.Errorf("export error reports after %d: %w", n, err)
		}
		for _, r := range items {
			if err := out.write(r); err != nil {
				return n, err
			}
			n++
		}
		if len(items) > 0 {
			after = items[len(items)-1].Cursor()
		}
		if err := bw.Flush(); err != nil {
			return n, err
		}
		if o.AfterBatch != nil {
			if err := o.AfterBatch(); err != nil {
				return n, err
			}
		}
		if len(items) < batch {
			break
		}
	}
	if err := out.end(); err != nil {
		return n, err
	}
	return n, bw.Flush()
}

// encoder writes one format.
type encoder struct {
	format Format
	w      *bufio.Writer
	csv    *csv.Writer
	json   *json.Encoder
	row    []string
	first  bool
}

func newEncoder(f Format, w *bufio.Writer) *encoder {
	e := &encoder{format: f, w: w, first: true}
	if f == JSON {
		e.json = json.NewEncoder(w)
	} else {
		e.csv = csv.NewWriter(w)
		e.row = make([]string, 0, len(CSVColumns))
	}
	return e
}

func (e *encoder) begin() error {
	if e.format == JSON {
		_, err := e.w.WriteString("[")
		return err
	}
	return e.csv.Write(CSVColumns)
}

func (e *encoder) write(r store.TenantReport) error {
	if e.format == JSON {
		sep := ",\n"
		if e.first {
			sep = "\n"
		}
		e.first = false
		if _, err := e.w.WriteString(sep); err != nil {
			return err
		}
		return e.json.Encode(r) // ends with a newline, so the array has one report per line
	}
	e.row = csvRow(r, e.row)
	if err := e.csv.Write(e.row); err != nil {
		return err
	}
	e.csv.Flush() // into the bufio.Writer: csv buffers by itself otherwise
	return e.csv.Error()
}

func (e *encoder) end() error {
	if e.format == JSON {
		_, err := e.w.WriteString("]\n")
		return err
	}
	e.csv.Flush()
	return e.csv.Error()
}
