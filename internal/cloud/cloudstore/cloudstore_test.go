package cloudstore_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/telemetry"
	"github.com/moat-iot/moat/internal/testenv"
)

func openSQLite(t *testing.T) *cloudstore.Store {
	t.Helper()
	s, err := cloudstore.Open(t.Context(), cloudstore.Config{Database: cloudstore.SQLite, SQLitePath: filepath.Join(t.TempDir(), "cloud.db")})
	if err != nil {
		t.Fatalf("Open(sqlite) = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openPostgres(t *testing.T) *cloudstore.Store {
	t.Helper()
	s, err := cloudstore.Open(t.Context(), cloudstore.Config{Database: cloudstore.Postgres, PostgresDSN: testenv.FreshPostgresDatabase(t)})
	if err != nil {
		t.Fatalf("Open(postgres) = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLite(t *testing.T) {
	t.Parallel()
	runSuite(t, openSQLite)
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	testenv.PostgresDSN(t)
	runSuite(t, openPostgres)
}

func TestSQLite_ReopenKeepsData(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cloud.db")
	for i := range 2 {
		s, err := cloudstore.OpenSQLite(t.Context(), path)
		if err != nil {
			t.Fatalf("OpenSQLite #%d = %v", i, err)
		}
		if i == 0 {
			if err := s.UpsertDevice(t.Context(), device(devA), t0); err != nil {
				t.Fatal(err)
			}
		} else if _, err := s.GetDevice(t.Context(), devA); err != nil {
			t.Errorf("GetDevice after reopen = %v", err)
		}
		s.Close()
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	for _, c := range []cloudstore.Config{{}, {Database: "mysql"}, {Database: cloudstore.SQLite}, {Database: cloudstore.Postgres}} {
		if err := c.Validate(); err == nil {
			t.Errorf("Config%+v.Validate() = nil, want an error", c)
		}
	}
	_, err := cloudstore.OpenPostgres(t.Context(), "postgres://user:s3cret@[::1")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("OpenPostgres(bad DSN) = %v, want an error that does not echo the password", err)
	}
}

var (
	t0   = time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	devA = strings.Repeat("a", 64)
	devB = strings.Repeat("b", 64)
)

func device(id string) cloudstore.Device {
	return cloudstore.Device{ID: id, Product: "dw100", CertNotAfter: t0.Add(24 * time.Hour), CertSerial: "01ab"}
}

func tele(seq uint64, dev string, at time.Time, cycle, phase string, readings map[string]float64) cloudstore.Record {
	rs := map[string]telemetry.Reading{}
	for k, v := range readings {
		rs[k] = telemetry.Reading{Value: v, Unit: "Cel"}
	}
	return cloudstore.Record{Seq: seq, Device: dev, Product: "dw100", ReceivedAt: at.Add(time.Second),
		Telemetry: &telemetry.Telemetry{V: 1, Time: at, Cycle: cycle, Phase: phase, Readings: rs}}
}

func runSuite(t *testing.T, open func(*testing.T) *cloudstore.Store) {
	tests := map[string]func(*testing.T, *cloudstore.Store){
		"Devices":                     testDevices,
		"ListDevices":                 testListDevices,
		"WriteBatchStoresOnce":        testWriteBatchStoresOnce,
		"WriteBatchRefusesBadInput":   testWriteBatchRefusesBadInput,
		"Summaries":                   testSummaries,
		"TelemetryPaging":             testTelemetryPaging,
		"Events":                      testEvents,
		"Alerts":                      testAlerts,
		"Diagnostics":                 testDiagnostics,
		"DiagnosticRefusesOtherReply": testDiagnosticRefusesOtherDevicesReply,
		"Retention":                   testRetention,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, open(t))
		})
	}
}

func testDevices(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	if _, err := s.GetDevice(ctx, devA); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Fatalf("GetDevice(unknown) = %v, want ErrNotFound", err)
	}
	d := device(devA)
	if err := s.UpsertDevice(ctx, d, t0); err != nil {
		t.Fatal(err)
	}
	d.CertNotAfter, d.CertSerial = t0.Add(48*time.Hour), "02"
	if err := s.UpsertDevice(ctx, d, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetDevice(ctx, devA)
	if err != nil {
		t.Fatal(err)
	}
	want := cloudstore.Device{ID: devA, Product: "dw100", FirstSeen: t0, LastSeen: t0.Add(time.Hour), CertNotAfter: t0.Add(48 * time.Hour), CertSerial: "02"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetDevice after renewal (-want +got):\n%s", diff)
	}
	for _, bad := range []cloudstore.Device{{ID: "x", Product: "dw100", CertNotAfter: t0, CertSerial: "1"}, {ID: devB, CertNotAfter: t0, CertSerial: "1"}, {ID: devB, Product: "dw100", CertSerial: "1"}} {
		if err := s.UpsertDevice(ctx, bad, t0); !errors.Is(err, cloudstore.ErrInvalid) {
			t.Errorf("UpsertDevice(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	ds, err := s.Devices(ctx, []string{devA, devB})
	if err != nil || len(ds) != 1 {
		t.Errorf("Devices(a, b) = %v, %v; want only a", ds, err)
	}
}

func testListDevices(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	var ids []string
	for i := range 5 {
		d := device(fmt.Sprintf("%064x", i+1))
		if i%2 == 1 {
			d.Product = "dw200"
		}
		if err := s.UpsertDevice(ctx, d, t0); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	var got []string
	f := cloudstore.DeviceFilter{Limit: 2}
	for {
		page, err := s.ListDevices(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page {
			got = append(got, d.ID)
		}
		if len(page) < f.Limit {
			break
		}
		f.After = page[len(page)-1].ID
	}
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Errorf("pages of 2 (-want +got):\n%s", diff)
	}
	page, err := s.ListDevices(ctx, cloudstore.DeviceFilter{Product: "dw200"})
	if err != nil || len(page) != 2 || page[0].ID != ids[1] || page[1].ID != ids[3] {
		t.Errorf("product dw200: %v, %v; want devices 2 and 4", page, err)
	}
	if _, err := s.ListDevices(ctx, cloudstore.DeviceFilter{Limit: 1001}); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("limit 1001: %v, want ErrInvalid", err)
	}
}

func testWriteBatchStoresOnce(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	batch := []cloudstore.Record{
		tele(1, devA, t0, "c1", "drying", map[string]float64{"drying_temp": 60, "rinse_level": 40}),
		tele(2, devA, t0.Add(time.Minute), "c1", "drying", map[string]float64{"drying_temp": 70}),
	}
	res, err := s.WriteBatch(ctx, batch)
	if err != nil || len(res.Stored) != 2 || res.Duplicates != 0 {
		t.Fatalf("WriteBatch = %+v, %v; want 2 stored", res, err)
	}
	// The redelivery of a committed batch (crash between commit and ack), plus one new.
	again := append(batch, tele(3, devA, t0.Add(2*time.Minute), "c1", "drying", map[string]float64{"drying_temp": 80}))
	res, err = s.WriteBatch(ctx, again)
	if err != nil || !cmp.Equal(res.Stored, []int{2}) || res.Duplicates != 2 {
		t.Fatalf("WriteBatch(redelivered) = %+v, %v; want [2] stored, 2 duplicates", res, err)
	}
	page, err := s.Telemetry(ctx, cloudstore.TelemetryQuery{Device: devA})
	if err != nil || len(page.Readings) != 4 {
		t.Fatalf("Telemetry = %d readings, %v; want 4", len(page.Readings), err)
	}
	sums, err := s.CycleSummaries(ctx, devA, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range sums {
		if m.Metric == "drying_temp" && (m.Count != 3 || m.Sum != 210) {
			t.Errorf("drying_temp summary = %+v, want count 3 sum 210 (a redelivery must not count twice)", m)
		}
	}
}

func testWriteBatchRefusesBadInput(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	good := tele(1, devA, t0, "", "", map[string]float64{"t": 1})
	nan := tele(2, devA, t0, "", "", map[string]float64{"t": 1})
	nan.Telemetry.Readings["t"] = telemetry.Reading{Value: 1, Unit: "bad unit!"}
	both := tele(3, devA, t0, "", "", map[string]float64{"t": 1})
	both.Event = &telemetry.Event{V: 1, Time: t0, Name: "x"}
	cases := map[string]cloudstore.Record{
		"invalid payload": nan,
		"two payloads":    both,
		"no payload":      {Seq: 4, Device: devA, Product: "dw100", ReceivedAt: t0},
		"zero seq":        func() cloudstore.Record { r := good; r.Seq = 0; return r }(),
		"bad device":      func() cloudstore.Record { r := good; r.Device = "A"; return r }(),
		"bad product":     func() cloudstore.Record { r := good; r.Product = ""; return r }(),
		"no received":     func() cloudstore.Record { r := good; r.ReceivedAt = time.Time{}; return r }(),
	}
	for name, bad := range cases {
		if _, err := s.WriteBatch(ctx, []cloudstore.Record{good, bad}); !errors.Is(err, cloudstore.ErrInvalid) {
			t.Errorf("WriteBatch(good, %s) = %v, want ErrInvalid", name, err)
		}
	}
	page, err := s.Telemetry(ctx, cloudstore.TelemetryQuery{Device: devA})
	if err != nil || len(page.Readings) != 0 {
		t.Errorf("Telemetry after refused batches = %d readings, %v; want none (bad input changes nothing)", len(page.Readings), err)
	}
}

func testSummaries(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	var batch []cloudstore.Record
	// Two batches so the upsert merges a stored row with a new delta.
	for i := range 6 {
		phase := "wash"
		if i >= 3 {
			phase = "drying"
		}
		batch = append(batch, tele(uint64(i+1), devA, t0.Add(time.Duration(i)*20*time.Minute), "c1", phase, map[string]float64{"temp": float64(10 * (i + 1))}))
	}
	for _, b := range [][]cloudstore.Record{batch[:2], batch[2:]} {
		if _, err := s.WriteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	cycles, err := s.CycleSummaries(ctx, devA, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []cloudstore.Summary{
		{Device: devA, Product: "dw100", Metric: "temp", Unit: "Cel", Cycle: "c1", Phase: "wash", First: t0, Last: t0.Add(40 * time.Minute), Min: 10, Max: 30, Sum: 60, Count: 3},
		{Device: devA, Product: "dw100", Metric: "temp", Unit: "Cel", Cycle: "c1", Phase: "drying", First: t0.Add(60 * time.Minute), Last: t0.Add(100 * time.Minute), Min: 40, Max: 60, Sum: 150, Count: 3},
	}
	if diff := cmp.Diff(want, cycles); diff != "" {
		t.Errorf("CycleSummaries (-want +got):\n%s", diff)
	}
	if cycles[1].Avg() != 50 {
		t.Errorf("drying Avg() = %v, want 50", cycles[1].Avg())
	}
	fleet, err := s.FleetCycleSummaries(ctx, "dw100", "temp", "drying", t0, 0)
	if err != nil || len(fleet) != 1 || fleet[0].Max != 60 {
		t.Errorf("FleetCycleSummaries = %+v, %v; want the drying summary", fleet, err)
	}
	hours, err := s.HourlySummaries(ctx, devA, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantH := []cloudstore.Summary{
		{Device: devA, Product: "dw100", Metric: "temp", Unit: "Cel", Hour: t0, Min: 10, Max: 30, Sum: 60, Count: 3},
		{Device: devA, Product: "dw100", Metric: "temp", Unit: "Cel", Hour: t0.Add(time.Hour), Min: 40, Max: 60, Sum: 150, Count: 3},
	}
	if diff := cmp.Diff(wantH, hours); diff != "" {
		t.Errorf("HourlySummaries (-want +got):\n%s", diff)
	}
}

func testTelemetryPaging(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	var batch []cloudstore.Record
	for i := range 10 {
		batch = append(batch, tele(uint64(i+1), devA, t0.Add(time.Duration(i)*time.Second), "", "", map[string]float64{"a": float64(i), "b": float64(i)}))
	}
	batch = append(batch, tele(100, devB, t0, "", "", map[string]float64{"a": 1}))
	if _, err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var got []string
	q := cloudstore.TelemetryQuery{Device: devA, Since: t0.Add(2 * time.Second), Until: t0.Add(8 * time.Second), Limit: 5}
	for pages := 0; ; pages++ {
		page, err := s.Telemetry(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Readings {
			got = append(got, fmt.Sprintf("%d%s", r.Seq, r.Metric))
		}
		if page.Next == nil {
			break
		}
		q.After = page.Next
	}
	want := strings.Fields("3a 3b 4a 4b 5a 5b 6a 6b 7a 7b 8a 8b")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("paged Telemetry (-want +got):\n%s", diff)
	}
	page, err := s.Telemetry(ctx, cloudstore.TelemetryQuery{Device: devA, Metrics: []string{"b"}, Limit: 100})
	if err != nil || len(page.Readings) != 10 || page.Next != nil {
		t.Errorf("Telemetry(metric b) = %d readings, next %v, %v; want 10, nil", len(page.Readings), page.Next, err)
	}
	if _, err := s.Telemetry(ctx, cloudstore.TelemetryQuery{Device: devA, Limit: 1001}); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("Telemetry(limit 1001) = %v, want ErrInvalid", err)
	}
}

func testEvents(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	ev := func(seq uint64, at time.Time) cloudstore.Record {
		return cloudstore.Record{Seq: seq, Device: devA, Product: "dw100", ReceivedAt: at,
			Event: &telemetry.Event{V: 1, Time: at, Name: "cycle_end", Cycle: "c1", Message: "done",
				Readings: map[string]telemetry.Reading{"water": {Value: 9.5, Unit: "L"}}}}
	}
	if _, err := s.WriteBatch(ctx, []cloudstore.Record{ev(1, t0), ev(2, t0.Add(time.Minute)), ev(3, t0.Add(2*time.Minute))}); err != nil {
		t.Fatal(err)
	}
	first, err := s.Events(ctx, devA, t0, time.Time{}, nil, 2)
	if err != nil || len(first) != 2 {
		t.Fatalf("Events(limit 2) = %v, %v", first, err)
	}
	if first[0].Readings["water"].Value != 9.5 || first[0].Message != "done" || first[0].Name != "cycle_end" {
		t.Errorf("Events()[0] = %+v", first[0])
	}
	rest, err := s.Events(ctx, devA, t0, time.Time{}, &first[1], 2)
	if err != nil || len(rest) != 1 || rest[0].Seq != 3 {
		t.Errorf("Events(after 2) = %+v, %v; want seq 3", rest, err)
	}
}

func testAlerts(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	na := cloudstore.NewAlert{Product: "dw100", Device: devA, Rule: "drying_hot", Severity: "warning", OpenedAt: t0, Value: 91.5,
		Message: "drying too hot", Evidence: json.RawMessage(`[{"seq":1,"value":91.5}]`)}
	a, err := s.OpenAlert(ctx, na)
	if err != nil {
		t.Fatal(err)
	}
	if a.State != cloudstore.AlertOpen || a.ID == 0 || string(a.Evidence) != `[{"seq":1,"value":91.5}]` {
		t.Errorf("OpenAlert = %+v", a)
	}
	// One episode at a time.
	if _, err := s.OpenAlert(ctx, na); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("OpenAlert(same rule, device, while open) = %v, want ErrConflict", err)
	}
	other := na
	other.Device = devB
	b, err := s.OpenAlert(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	bad := na
	bad.Evidence = json.RawMessage(`{`)
	if _, err := s.OpenAlert(ctx, bad); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("OpenAlert(bad evidence) = %v, want ErrInvalid", err)
	}
	open, err := s.OpenAlerts(ctx)
	if err != nil || len(open) != 2 || open[0].ID != a.ID {
		t.Errorf("OpenAlerts = %+v, %v; want a, b", open, err)
	}
	cleared, err := s.ClearAlert(ctx, a.ID, t0.Add(time.Hour))
	if err != nil || cleared.State != cloudstore.AlertCleared || !cleared.ClearedAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("ClearAlert = %+v, %v", cleared, err)
	}
	if _, err := s.ClearAlert(ctx, a.ID, t0); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("ClearAlert(cleared) = %v, want ErrConflict", err)
	}
	if _, err := s.ClearAlert(ctx, 999999, t0); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("ClearAlert(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.OpenAlert(ctx, na); err != nil {
		t.Errorf("OpenAlert(new episode after clear) = %v", err)
	}
	page, next, err := s.ListAlerts(ctx, cloudstore.AlertFilter{Device: devA, Limit: 1})
	if err != nil || len(page) != 1 || next == 0 {
		t.Fatalf("ListAlerts(device a, limit 1) = %v, %d, %v", page, next, err)
	}
	page2, next2, err := s.ListAlerts(ctx, cloudstore.AlertFilter{Device: devA, Limit: 1, Before: next})
	if err != nil || len(page2) != 1 || page2[0].ID != a.ID || next2 != 0 {
		t.Errorf("ListAlerts(page 2) = %v, %d, %v; want the first alert, last page", page2, next2, err)
	}
	byState, _, err := s.ListAlerts(ctx, cloudstore.AlertFilter{State: cloudstore.AlertOpen, Product: "dw100"})
	if err != nil || len(byState) != 2 {
		t.Errorf("ListAlerts(open) = %d, %v; want 2", len(byState), err)
	}
	if _, err := s.GetAlert(ctx, b.ID); err != nil {
		t.Error(err)
	}
}

func newDiag(id, dev string, alert int64) cloudstore.NewDiagnostic {
	return cloudstore.NewDiagnostic{ID: id, Device: dev, Command: "heater-self-test", Args: json.RawMessage(`{"watts":1800}`),
		RequestedBy: "rule:drying_hot", RequestedAt: t0, Deadline: t0.Add(time.Minute), AlertID: alert}
}

func reply(seq uint64, dev, id string, ok bool) cloudstore.Record {
	r := &telemetry.DiagnosticReply{V: 1, ID: id, OK: ok, At: t0.Add(10 * time.Second)}
	if ok {
		r.Result = json.RawMessage(`{"ohms":24}`)
	} else {
		r.Error = "relay stuck"
	}
	return cloudstore.Record{Seq: seq, Device: dev, Product: "dw100", ReceivedAt: t0.Add(11 * time.Second), Reply: r}
}

func testDiagnostics(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	a, err := s.OpenAlert(ctx, cloudstore.NewAlert{Product: "dw100", Device: devA, Rule: "r", Severity: "critical", OpenedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.CreateDiagnostic(ctx, newDiag("req-1", devA, a.ID))
	if err != nil || d.State != cloudstore.DiagnosticPending || d.AlertID != a.ID {
		t.Fatalf("CreateDiagnostic = %+v, %v", d, err)
	}
	if _, err := s.CreateDiagnostic(ctx, newDiag("req-1", devA, 0)); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("CreateDiagnostic(same id) = %v, want ErrConflict", err)
	}
	if _, err := s.CreateDiagnostic(ctx, newDiag("req-x", devA, 424242)); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("CreateDiagnostic(unknown alert) = %v, want ErrNotFound", err)
	}
	if _, err := s.CreateDiagnostic(ctx, newDiag("bad id!", devA, 0)); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("CreateDiagnostic(bad id) = %v, want ErrInvalid", err)
	}
	if err := s.MarkDiagnosticSent(ctx, "req-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDiagnosticSent(ctx, "req-1"); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("MarkDiagnosticSent(sent) = %v, want ErrConflict", err)
	}
	if err := s.MarkDiagnosticSent(ctx, "nope"); !errors.Is(err, cloudstore.ErrNotFound) {
		t.Errorf("MarkDiagnosticSent(unknown) = %v, want ErrNotFound", err)
	}
	res, err := s.WriteBatch(ctx, []cloudstore.Record{reply(1, devA, "req-1", true)})
	if err != nil || res.UnmatchedReplies != 0 {
		t.Fatalf("WriteBatch(reply) = %+v, %v", res, err)
	}
	d, err = s.GetDiagnostic(ctx, "req-1")
	if err != nil || d.State != cloudstore.DiagnosticSucceeded || string(d.Result) != `{"ohms":24}` || !d.FinishedAt.Equal(t0.Add(11*time.Second)) {
		t.Errorf("GetDiagnostic after reply = %+v, %v", d, err)
	}
	a, _ = s.GetAlert(ctx, a.ID)
	if a.DiagnosticID != "req-1" || a.DiagnosticState != cloudstore.DiagnosticSucceeded || string(a.DiagnosticResult) != `{"ohms":24}` {
		t.Errorf("alert after reply = %+v, want the diagnostic's outcome", a)
	}
	// A late second reply changes nothing.
	res, err = s.WriteBatch(ctx, []cloudstore.Record{reply(2, devA, "req-1", false)})
	if err != nil || res.UnmatchedReplies != 1 {
		t.Errorf("WriteBatch(second reply) = %+v, %v; want 1 unmatched", res, err)
	}
	// Time-outs.
	if _, err := s.CreateDiagnostic(ctx, newDiag("req-2", devB, a.ID)); err != nil {
		t.Fatal(err)
	}
	ids, err := s.ExpireDiagnostics(ctx, t0.Add(30*time.Second))
	if err != nil || len(ids) != 0 {
		t.Errorf("ExpireDiagnostics(before deadline) = %v, %v", ids, err)
	}
	ids, err = s.ExpireDiagnostics(ctx, t0.Add(time.Minute))
	if err != nil || !cmp.Equal(ids, []string{"req-2"}) {
		t.Errorf("ExpireDiagnostics(at deadline) = %v, %v; want [req-2]", ids, err)
	}
	d, _ = s.GetDiagnostic(ctx, "req-2")
	a, _ = s.GetAlert(ctx, a.ID)
	if d.State != cloudstore.DiagnosticTimedOut || a.DiagnosticState != cloudstore.DiagnosticTimedOut {
		t.Errorf("after expiry diagnostic %q, alert %q; want timed_out", d.State, a.DiagnosticState)
	}
	if _, err := s.FinishDiagnostic(ctx, devB, *reply(3, devB, "req-2", true).Reply, t0.Add(2*time.Minute)); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("FinishDiagnostic(timed out) = %v, want ErrConflict", err)
	}
	list, err := s.ListDiagnostics(ctx, cloudstore.DiagnosticFilter{AlertID: a.ID})
	if err != nil || len(list) != 2 {
		t.Errorf("ListDiagnostics(alert) = %d, %v; want 2", len(list), err)
	}
	list, err = s.ListDiagnostics(ctx, cloudstore.DiagnosticFilter{Device: devB, State: cloudstore.DiagnosticTimedOut})
	if err != nil || len(list) != 1 {
		t.Errorf("ListDiagnostics(device b, timed out) = %d, %v; want 1", len(list), err)
	}
}

// testDiagnosticRefusesOtherDevicesReply attacks the rule that only the addressed device
// answers a request (ATTACKS row 32): device B's reply to A's request finishes nothing.
func testDiagnosticRefusesOtherDevicesReply(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	if _, err := s.CreateDiagnostic(ctx, newDiag("req-a", devA, 0)); err != nil {
		t.Fatal(err)
	}
	res, err := s.WriteBatch(ctx, []cloudstore.Record{reply(1, devB, "req-a", true)})
	if err != nil || res.UnmatchedReplies != 1 {
		t.Errorf("WriteBatch(B answers A's request) = %+v, %v; want 1 unmatched", res, err)
	}
	if _, err := s.FinishDiagnostic(ctx, devB, *reply(2, devB, "req-a", true).Reply, t0); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("FinishDiagnostic(B answers A's request) = %v, want ErrConflict", err)
	}
	d, _ := s.GetDiagnostic(ctx, "req-a")
	if d.State != cloudstore.DiagnosticPending {
		t.Errorf("A's request after B's reply: state %q, want pending", d.State)
	}
}

func testRetention(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	old := tele(1, devA, t0, "c1", "", map[string]float64{"a": 1, "b": 2})
	recent := tele(2, devA, t0.Add(48*time.Hour), "c2", "", map[string]float64{"a": 3})
	ev := cloudstore.Record{Seq: 3, Device: devA, Product: "dw100", ReceivedAt: t0, Event: &telemetry.Event{V: 1, Time: t0, Name: "boot"}}
	if _, err := s.WriteBatch(ctx, []cloudstore.Record{old, recent, ev}); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteRawBefore(ctx, t0.Add(time.Hour), 1) // chunks of one row
	if err != nil || n != 2 {
		t.Errorf("DeleteRawBefore = %d, %v; want 2", n, err)
	}
	page, _ := s.Telemetry(ctx, cloudstore.TelemetryQuery{Device: devA})
	if len(page.Readings) != 1 || page.Readings[0].Seq != 2 {
		t.Errorf("readings after prune = %+v, want seq 2 only", page.Readings)
	}
	cycles, _ := s.CycleSummaries(ctx, devA, time.Time{}, 0)
	if len(cycles) != 3 {
		t.Errorf("cycle summaries after raw prune = %d, want 3 (downsampling keeps them)", len(cycles))
	}
	n, err = s.DeleteSummariesBefore(ctx, t0.Add(time.Hour), 0)
	if err != nil || n != 5 { // 2 cycle + 2 hourly summaries of seq 1, and its event
		t.Errorf("DeleteSummariesBefore = %d, %v; want 5", n, err)
	}
	cycles, _ = s.CycleSummaries(ctx, devA, time.Time{}, 0)
	if len(cycles) != 1 || cycles[0].Cycle != "c2" {
		t.Errorf("cycle summaries after prune = %+v, want c2 only", cycles)
	}

	// Alerts and diagnostics: old finished ones go; open and unfinished ones stay.
	if err := s.UpsertDevice(ctx, device(devA), t0); err != nil {
		t.Fatal(err)
	}
	alert := func(rule string, at time.Time) cloudstore.Alert {
		a, err := s.OpenAlert(ctx, cloudstore.NewAlert{Product: "dw100", Device: devA, Rule: rule, Severity: "warning", OpenedAt: at, Message: rule})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	oldCleared, openOld, recentCleared := alert("old", t0), alert("open", t0), alert("recent", t0)
	for _, c := range []struct {
		id int64
		at time.Time
	}{{oldCleared.ID, t0.Add(time.Minute)}, {recentCleared.ID, t0.Add(48 * time.Hour)}} {
		if _, err := s.ClearAlert(ctx, c.id, c.at); err != nil {
			t.Fatal(err)
		}
	}
	finished := newDiag("dgn_finished", devA, 0)
	unfinished := newDiag("dgn_unfinished", devA, 0)
	for _, n := range []cloudstore.NewDiagnostic{finished, unfinished} {
		if _, err := s.CreateDiagnostic(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.FinishDiagnostic(ctx, devA, telemetry.DiagnosticReply{V: 1, ID: finished.ID, OK: true, At: t0}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteSummariesBefore(ctx, t0.Add(time.Hour), 1); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[int64]bool{oldCleared.ID: false, openOld.ID: true, recentCleared.ID: true} {
		if _, err := s.GetAlert(ctx, id); (err == nil) != want {
			t.Errorf("alert %d after prune: %v, want kept %v", id, err, want)
		}
	}
	for id, want := range map[string]bool{finished.ID: false, unfinished.ID: true} {
		if _, err := s.GetDiagnostic(ctx, id); (err == nil) != want {
			t.Errorf("diagnostic %s after prune: %v, want kept %v", id, err, want)
		}
	}
}
