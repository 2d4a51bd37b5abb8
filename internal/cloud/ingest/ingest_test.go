package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/telemetry"
)

var (
	devA       = strings.Repeat("a", 64)
	devB       = strings.Repeat("b", 64)
	devExpired = strings.Repeat("c", 64)
	devUnknown = strings.Repeat("d", 64)
)

// startJetStream runs an in-process nats-server with JetStream and the device stream.
func startJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: telemetry.Stream, Subjects: telemetry.StreamSubjects, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	return js
}

type harness struct {
	t     testing.TB
	js    jetstream.JetStream
	store *cloudstore.Store
	in    *Ingest

	mu      sync.Mutex
	samples []Sample
}

// newHarness opens a store with devices A and B (valid certificates) and the expired one,
// and an ingest over wrap(store) (nil: the store itself), running until the test ends.
func newHarness(t testing.TB, cfg Config, wrap func(Store) Store) *harness {
	t.Helper()
	h := &harness{t: t, js: startJetStream(t)}
	st, err := cloudstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "cloud.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h.store = st
	now := time.Now()
	for _, d := range []struct {
		id       string
		notAfter time.Time
	}{{devA, now.Add(24 * time.Hour)}, {devB, now.Add(24 * time.Hour)}, {devExpired, now.Add(-time.Minute)}} {
		if err := st.UpsertDevice(context.Background(), cloudstore.Device{ID: d.id, Product: "dw100", CertNotAfter: d.notAfter, CertSerial: "01"}, now); err != nil {
			t.Fatal(err)
		}
	}
	var s Store = st
	if wrap != nil {
		s = wrap(st)
	}
	in, err := New(cfg, Deps{
		JetStream: h.js, Store: s, Registerer: prometheus.NewRegistry(), Now: time.Now,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Hook: func(_ context.Context, ss []Sample) {
			h.mu.Lock()
			h.samples = append(h.samples, ss...)
			h.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.in = in
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return h
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// publish stores payload on subject as the broker stores a device's QoS 1 publish (under
// telemetry.StoredPrefix).
func (h *harness) publish(subject string, payload []byte) {
	h.t.Helper()
	if _, err := h.js.Publish(context.Background(), telemetry.StoredPrefix+subject, payload); err != nil {
		h.t.Fatalf("publish %s: %v", subject, err)
	}
}

func telemetryPayload(t testing.TB, at time.Time, v float64) []byte {
	t.Helper()
	b, err := telemetry.Encode(telemetry.Telemetry{V: 1, Time: at, Cycle: "c1", Phase: "drying",
		Readings: map[string]telemetry.Reading{"drying_temp": {Value: v, Unit: "Cel"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func subject(dev string) string { return telemetry.Subject(telemetry.TelemetryTopic(dev)) }

// waitFor polls cond until it holds or 20 seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) readings(dev string) int {
	h.t.Helper()
	n := 0
	q := cloudstore.TelemetryQuery{Device: dev, Limit: 1000}
	for {
		page, err := h.store.Telemetry(context.Background(), q)
		if err != nil {
			h.t.Fatal(err)
		}
		n += len(page.Readings)
		if page.Next == nil {
			return n
		}
		q.After = page.Next
	}
}

func (h *harness) dropped(reason string) int {
	return int(testutil.ToFloat64(h.in.m.dropped.WithLabelValues(reason)))
}

func (h *harness) handled() int {
	n := testutil.ToFloat64(h.in.m.stored) + testutil.ToFloat64(h.in.m.duplicates)
	for _, r := range Reasons {
		n += testutil.ToFloat64(h.in.m.dropped.WithLabelValues(r))
	}
	return int(n)
}

func testConfig() Config {
	c := DefaultConfig()
	c.AckWait = 2 * time.Second
	c.RetryDelay = 50 * time.Millisecond
	c.DeviceRate, c.DeviceBurst = 1000, 1000
	return c
}

func TestIngest_StoresTelemetryEventsAndReplies(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(), nil)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := h.store.CreateDiagnostic(ctx, cloudstore.NewDiagnostic{ID: "req-1", Device: devA, Command: "heater-self-test",
		RequestedBy: "operator", RequestedAt: now, Deadline: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	ev, _ := telemetry.Encode(telemetry.Event{V: 1, Time: now, Name: "cycle_end", Cycle: "c1"})
	rep, _ := telemetry.Encode(telemetry.DiagnosticReply{V: 1, ID: "req-1", OK: true, Result: json.RawMessage(`{"ohms":24}`), At: now})
	h.publish(subject(devA), telemetryPayload(t, now, 71.5))
	h.publish(telemetry.Subject(telemetry.EventsTopic(devA)), ev)
	h.publish(telemetry.Subject(telemetry.ReplyTopic(devA, "req-1")), rep)
	waitFor(t, "three stored messages", func() bool { return testutil.ToFloat64(h.in.m.stored) == 3 })

	page, err := h.store.Telemetry(ctx, cloudstore.TelemetryQuery{Device: devA})
	if err != nil || len(page.Readings) != 1 || page.Readings[0].Value != 71.5 || page.Readings[0].Product != "dw100" {
		t.Errorf("Telemetry = %+v, %v; want the one reading of product dw100", page.Readings, err)
	}
	evs, err := h.store.Events(ctx, devA, time.Time{}, time.Time{}, nil, 0)
	if err != nil || len(evs) != 1 || evs[0].Name != "cycle_end" {
		t.Errorf("Events = %+v, %v", evs, err)
	}
	d, err := h.store.GetDiagnostic(ctx, "req-1")
	if err != nil || d.State != cloudstore.DiagnosticSucceeded {
		t.Errorf("diagnostic after reply = %+v, %v; want succeeded", d, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var kinds []string
	for _, s := range h.samples {
		if s.Product != "dw100" || s.Device != devA {
			t.Errorf("hook sample %+v: want device A of dw100", s)
		}
		kinds = append(kinds, s.Kind())
	}
	if got, want := strings.Join(kinds, ","), "telemetry,events,reply"; got != want {
		t.Errorf("hook kinds = %s, want %s", got, want)
	}
}

// failAfterCommit commits the first batch with messages, then reports a failure, as a
// crash between the commit and the acks would look to JetStream.
type failAfterCommit struct {
	Store
	failed atomic.Bool
}

func (f *failAfterCommit) WriteBatch(ctx context.Context, rs []cloudstore.Record) (cloudstore.BatchResult, error) {
	res, err := f.Store.WriteBatch(ctx, rs)
	if err == nil && len(rs) > 0 && f.failed.CompareAndSwap(false, true) {
		return cloudstore.BatchResult{}, errors.New("injected: lost after commit")
	}
	return res, err
}

func TestIngest_StoresRedeliveredMessageOnce(t *testing.T) {
	t.Parallel()
	var f *failAfterCommit
	h := newHarness(t, testConfig(), func(s Store) Store { f = &failAfterCommit{Store: s}; return f })
	const n = 20
	now := time.Now()
	for i := range n {
		h.publish(subject(devA), telemetryPayload(t, now.Add(time.Duration(i)*time.Second), float64(i)))
	}
	waitFor(t, "every message stored or found a duplicate", func() bool {
		return testutil.ToFloat64(h.in.m.stored)+testutil.ToFloat64(h.in.m.duplicates) == n && f.failed.Load()
	})
	if got := h.readings(devA); got != n {
		t.Errorf("readings after redelivery = %d, want %d (each message once)", got, n)
	}
	sums, err := h.store.CycleSummaries(t.Context(), devA, time.Time{}, 0)
	if err != nil || len(sums) != 1 || sums[0].Count != n {
		t.Errorf("cycle summaries after redelivery = %+v, %v; want one with count %d", sums, err, n)
	}
	if d := testutil.ToFloat64(h.in.m.duplicates); d == 0 {
		t.Errorf("duplicates = 0, want the redelivered batch counted")
	}
}

// failing refuses every write while fail is set, as a database outage would.
type failing struct {
	Store
	fail  atomic.Bool
	tries atomic.Int64
}

func (f *failing) WriteBatch(ctx context.Context, rs []cloudstore.Record) (cloudstore.BatchResult, error) {
	if f.fail.Load() {
		f.tries.Add(1)
		return cloudstore.BatchResult{}, errors.New("injected: database down")
	}
	return f.Store.WriteBatch(ctx, rs)
}

func TestIngest_AcksOnlyAfterCommit(t *testing.T) {
	t.Parallel()
	var f *failing
	h := newHarness(t, testConfig(), func(s Store) Store { f = &failing{Store: s}; f.fail.Store(true); return f })
	const n = 10
	for i := range n {
		h.publish(subject(devA), telemetryPayload(t, time.Now(), float64(i)))
	}
	waitFor(t, "the batch to be refused and redelivered", func() bool { return f.tries.Load() >= 3 })
	cons, err := h.js.Consumer(t.Context(), telemetry.Stream, "ingest")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 0 {
		t.Errorf("ack floor while the store fails = %d, want 0 (nothing acked before a commit)", info.AckFloor.Stream)
	}
	if got := h.readings(devA); got != 0 {
		t.Fatalf("readings while failing = %d", got)
	}
	f.fail.Store(false)
	waitFor(t, "the redelivered batch stored", func() bool { return h.readings(devA) == n })
	waitFor(t, "every message acked", func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.AckFloor.Stream == n
	})
}

func TestIngest_DropsMalformedAndKeepsGoing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(), nil)
	now := time.Now()
	good := telemetryPayload(t, now, 50)
	big := append([]byte(`{"v":1,"time":"2026-01-01T00:00:00Z","readings":{"a":{"value":1,"unit":"Cel"}},"cycle":"`),
		strings.Repeat("x", telemetry.MaxPayloadBytes)...)
	mismatch, _ := telemetry.Encode(telemetry.DiagnosticReply{V: 1, ID: "req-2", OK: true, At: now})
	bad := []struct {
		subject string
		payload string
		reason  string
	}{
		{subject(devA), string(big) + `"}`, ReasonOversized},
		{subject(devA), "\xa1\x61v\x01", ReasonUnsupportedEncoding},
		{subject(devA), `{"v":1,`, ReasonMalformed},
		{subject(devA), `{"v":1,"v":1,"time":"2026-01-01T00:00:00Z","readings":{"a":{"value":1,"unit":"Cel"}}}`, ReasonMalformed},
		{subject(devA), `{"v":1,"time":"2026-01-01T00:00:00Z","readings":{"a":{"value":1,"unit":"Cel"}},"extra":1}`, ReasonMalformed},
		{subject(devA), `{"v":2,"time":"2026-01-01T00:00:00Z","readings":{"a":{"value":1,"unit":"Cel"}}}`, ReasonInvalid},
		{subject(devA), `{"v":1,"time":"2026-01-01T00:00:00Z","readings":{"a":{"value":1e999,"unit":"Cel"}}}`, ReasonMalformed},
		{"devices.NOT-A-DEVICE.telemetry", string(good), ReasonBadSubject},
		{telemetry.Subject(telemetry.ReplyTopic(devA, "req-1")), string(mismatch), ReasonRequestMismatch},
		{subject(devUnknown), string(good), ReasonUnknownDevice},
	}
	want := map[string]int{}
	for i, b := range bad {
		h.publish(b.subject, []byte(b.payload))
		h.publish(subject(devB), telemetryPayload(t, now.Add(time.Duration(i)*time.Second), float64(i)))
		want[b.reason]++
	}
	total := 2 * len(bad)
	waitFor(t, "every message handled", func() bool { return h.handled() == total })
	if got := h.readings(devB); got != len(bad) {
		t.Errorf("device B readings = %d, want %d (bad messages must not stop the ingest)", got, len(bad))
	}
	if got := h.readings(devA); got != 0 {
		t.Errorf("device A readings = %d, want 0", got)
	}
	for _, r := range Reasons {
		if got := h.dropped(r); got != want[r] {
			t.Errorf("dropped{reason=%s} = %d, want %d", r, got, want[r])
		}
	}
}

func TestIngest_LimitsFloodingDevice(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.DeviceRate, cfg.DeviceBurst = 10, 50
	h := newHarness(t, cfg, nil)
	const flood, polite = 500, 20
	start := time.Now()
	for i := range flood {
		h.publish(subject(devA), telemetryPayload(t, start, float64(i)))
		if i%(flood/polite) == 0 {
			h.publish(subject(devB), telemetryPayload(t, start.Add(time.Duration(i)*time.Millisecond), float64(i)))
		}
	}
	span := time.Since(start)
	waitFor(t, "every message handled", func() bool { return h.handled() == flood+polite })
	if got := h.readings(devB); got != polite {
		t.Errorf("device B readings = %d, want all %d (a flood must not starve others)", got, polite)
	}
	limit := cfg.DeviceBurst + int(span.Seconds()*cfg.DeviceRate) + 1
	a := h.readings(devA)
	if a > limit || a < cfg.DeviceBurst {
		t.Errorf("device A readings = %d, want %d to %d (burst, plus rate over %s)", a, cfg.DeviceBurst, limit, span)
	}
	if got := h.dropped(ReasonRateLimited); got != flood-a {
		t.Errorf("dropped{rate_limited} = %d, want %d", got, flood-a)
	}
}

func TestIngest_DropsMessagesAfterCertificateExpiry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(), nil)
	now := time.Now()
	ev, _ := telemetry.Encode(telemetry.Event{V: 1, Time: now, Name: "offline", Message: "will"})
	// The expired device's telemetry, and the will the broker would fire for it.
	h.publish(subject(devExpired), telemetryPayload(t, now, 1))
	h.publish(telemetry.Subject(telemetry.EventsTopic(devExpired)), ev)
	h.publish(subject(devA), telemetryPayload(t, now, 2))
	waitFor(t, "three handled", func() bool { return h.handled() == 3 })
	if got := h.readings(devExpired); got != 0 {
		t.Errorf("expired device readings = %d, want 0", got)
	}
	if evs, _ := h.store.Events(t.Context(), devExpired, time.Time{}, time.Time{}, nil, 0); len(evs) != 0 {
		t.Errorf("expired device events = %+v, want none (its will must not be stored)", evs)
	}
	if got := h.dropped(ReasonCertificateExpired); got != 2 {
		t.Errorf("dropped{certificate_expired} = %d, want 2", got)
	}
	// A renewed certificate (the broker records it on the next connection) lets it in again.
	if err := h.store.UpsertDevice(t.Context(), cloudstore.Device{ID: devExpired, Product: "dw100", CertNotAfter: now.Add(time.Hour), CertSerial: "02"}, now); err != nil {
		t.Fatal(err)
	}
	h.publish(subject(devExpired), telemetryPayload(t, now, 3))
	waitFor(t, "renewed device stored", func() bool { return h.readings(devExpired) == 1 })
}

func TestIngest_Prune(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(), nil)
	now := time.Now()
	h.publish(subject(devA), telemetryPayload(t, now, 1))
	waitFor(t, "stored", func() bool { return h.readings(devA) == 1 })
	if err := h.in.Prune(t.Context(), now.Add(6*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := h.readings(devA); got != 1 {
		t.Errorf("readings after 6 days = %d, want 1", got)
	}
	if err := h.in.Prune(t.Context(), now.Add(8*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := h.readings(devA); got != 0 {
		t.Errorf("readings after 8 days = %d, want 0", got)
	}
	sums, _ := h.store.CycleSummaries(t.Context(), devA, time.Time{}, 0)
	if len(sums) != 1 {
		t.Errorf("cycle summaries after 8 days = %d, want 1 (kept longer)", len(sums))
	}
	if err := h.in.Prune(t.Context(), now.Add(401*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	sums, _ = h.store.CycleSummaries(t.Context(), devA, time.Time{}, 0)
	hours, _ := h.store.HourlySummaries(t.Context(), devA, time.Time{}, 0)
	if len(sums)+len(hours) != 0 {
		t.Errorf("summaries after 401 days = %d cycle, %d hourly; want none", len(sums), len(hours))
	}
}

func TestLimiter_BoundsTrackedDevices(t *testing.T) {
	t.Parallel()
	l := newLimiter(1, 5, 100)
	at := time.Unix(1000, 0)
	for i := range 1000 {
		l.allow(fmt.Sprintf("dev%d", i), at)
		if n := l.len(); n > 100 {
			t.Fatalf("after %d devices the limiter tracks %d, want at most 100", i+1, n)
		}
	}
}

func TestLimiter_UndoForgetsFailedBatch(t *testing.T) {
	t.Parallel()
	l := newLimiter(1, 2, 10)
	at := time.Unix(1000, 0)
	undo := l.begin()
	for i, want := range []bool{true, true, false} {
		if got := l.allow("a", at); got != want {
			t.Fatalf("allow #%d = %v, want %v", i+1, got, want)
		}
	}
	undo()
	l.begin()
	if !l.allow("a", at) {
		t.Error("after undo the redelivered batch is refused; want it judged afresh")
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	var zero Config
	err := zero.Validate()
	if err == nil || len(strings.Split(err.Error(), "\n")) < 10 {
		t.Errorf("Config{}.Validate() = %v, want every field named", err)
	}
}
