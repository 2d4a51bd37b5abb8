package notify_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moat-iot/moat/internal/store/postgres/notify"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// heard collects the events a handler received.
type heard struct {
	mu  sync.Mutex
	evs []notify.Event
	c   chan struct{} // pinged on each event
}

func newHeard() *heard { return &heard{c: make(chan struct{}, 1000)} }

func (h *heard) handle(e notify.Event) {
	h.mu.Lock()
	h.evs = append(h.evs, e)
	h.mu.Unlock()
	h.c <- struct{}{}
}

func (h *heard) count(e notify.Event) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, x := range h.evs {
		if x == e {
			n++
		}
	}
	return n
}

// waitFor waits until e was heard at least n times, up to a deadline.
func (h *heard) waitFor(t *testing.T, e notify.Event, n int, within time.Duration) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for h.count(e) < n {
		select {
		case <-h.c:
		case <-deadline.C:
			t.Fatalf("event %+v heard %d times within %s, want %d", e, h.count(e), within, n)
		}
	}
}

func randomName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// withAppName tags the connections of dsn so a test can find and cut them.
func withAppName(t *testing.T, dsn, name string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal("parse test DSN: invalid format")
		}
		q := u.Query()
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " application_name=" + name
}

type replica struct {
	n     *notify.Notifier
	wake  *heard
	reg   *prometheus.Registry
	appID string
}

// startReplica runs a Notifier on channel until the test ends.
func startReplica(t *testing.T, dsn, channel string) *replica {
	t.Helper()
	r := &replica{wake: newHeard(), reg: prometheus.NewRegistry(), appID: randomName("moat_notify_")}
	n, err := notify.New(notify.Config{DSN: withAppName(t, dsn, r.appID), Channel: channel,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: r.reg,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("notify.New: %v", err)
	}
	if err := n.Handle(notify.KindWake, r.wake.handle); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	r.n = n
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// Connected and listening once the first every-tenant event arrived.
	r.wake.waitFor(t, notify.Event{Kind: notify.KindWake}, 1, 10*time.Second)
	return r
}

func adminExec(t *testing.T, dsn, stmt string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, stmt, args...); err != nil {
		t.Fatalf("exec %q: %v", stmt, err)
	}
}

// A change published on one replica wakes the tenant's waiters on every replica, itself
// included, within a second.
func TestNotify_WakesEveryReplica(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresDSN(t)
	channel := randomName("moat_test_")
	a, b := startReplica(t, dsn, channel), startReplica(t, dsn, channel)
	e := notify.Event{Kind: notify.KindWake, Tenant: "tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f"}
	start := time.Now()
	a.n.Publish(e)
	b.wake.waitFor(t, e, 1, time.Second)
	a.wake.waitFor(t, e, 1, time.Second)
	t.Logf("wake-up heard on the other replica after %s", time.Since(start))
	// Another tenant's event wakes only that tenant.
	if got := b.wake.count(notify.Event{Kind: notify.KindWake, Tenant: "tnt_other"}); got != 0 {
		t.Errorf("events for tnt_other = %d, want 0", got)
	}
}

// Notifications sent while a replica's listen connection is down are lost; the replica
// wakes every tenant's waiters once it listens again, and hears later events.
func TestNotify_ReconnectWakesEveryone(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresDSN(t)
	channel := randomName("moat_test_")
	a, b := startReplica(t, dsn, channel), startReplica(t, dsn, channel)
	all := notify.Event{Kind: notify.KindWake, Tenant: notify.AllTenants}
	if got := b.wake.count(all); got != 1 {
		t.Fatalf("every-tenant wake-ups at start = %d, want 1", got)
	}
	adminExec(t, dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, b.appID)
	b.wake.waitFor(t, all, 2, 10*time.Second)
	if got := testutil.ToFloat64(mustCounter(t, b.reg, "moat_notify_reconnects_total", "listen")); got < 1 {
		t.Errorf("listen reconnects = %v, want at least 1", got)
	}
	e := notify.Event{Kind: notify.KindWake, Tenant: "tnt_after"}
	a.n.Publish(e)
	b.wake.waitFor(t, e, 1, 5*time.Second)
}

// The sender's connection may be cut too: events pending then are sent once it is back.
func TestNotify_SenderReconnects(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresDSN(t)
	channel := randomName("moat_test_")
	a, b := startReplica(t, dsn, channel), startReplica(t, dsn, channel)
	first := notify.Event{Kind: notify.KindWake, Tenant: "tnt_first"}
	a.n.Publish(first)
	b.wake.waitFor(t, first, 1, 5*time.Second)
	adminExec(t, dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, a.appID)
	for i := range 3 {
		e := notify.Event{Kind: notify.KindWake, Tenant: tenant.ID(fmt.Sprintf("tnt_next%d", i))}
		a.n.Publish(e)
		b.wake.waitFor(t, e, 1, 10*time.Second)
	}
}

// Anyone with a database role can NOTIFY: payloads of unknown kinds, malformed or oversize
// ones reach no handler and are counted.
func TestNotify_RejectsForeignPayloads(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresDSN(t)
	channel := randomName("moat_test_")
	b := startReplica(t, dsn, channel)
	for _, p := range []string{"revoke:tnt_x", "wake", "wake:", "wake:tnt x", "WAKE:tnt_x", ":tnt_x",
		"wake:tnt_x:extra", "wake:" + strings.Repeat("a", 200), "wake:*\n"} {
		adminExec(t, dsn, `SELECT pg_notify($1, $2)`, channel, p)
	}
	last := notify.Event{Kind: notify.KindWake, Tenant: "tnt_valid"}
	adminExec(t, dsn, `SELECT pg_notify($1, $2)`, channel, "wake:tnt_valid")
	b.wake.waitFor(t, last, 1, 5*time.Second)
	b.wake.mu.Lock()
	evs := append([]notify.Event(nil), b.wake.evs...)
	b.wake.mu.Unlock()
	if want := []notify.Event{{Kind: notify.KindWake}, last}; fmt.Sprint(evs) != fmt.Sprint(want) {
		t.Errorf("handled events = %v, want %v", evs, want)
	}
	if got := testutil.ToFloat64(mustCounter(t, b.reg, "moat_notify_received_total", "ignored")); got != 1 {
		t.Errorf("ignored events = %v, want 1 (revoke: an unknown kind)", got)
	}
	if got := testutil.ToFloat64(mustCounter(t, b.reg, "moat_notify_received_total", "invalid")); got != 8 {
		t.Errorf("invalid events = %v, want 8", got)
	}
}

// Publish never blocks and holds at most MaxPending events (plus one every-tenant event per
// kind): a burst of changes for many tenants collapses into "every tenant".
func TestNotify_PublishIsBoundedAndCoalesces(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	n, err := notify.New(notify.Config{DSN: "postgres://nobody@127.0.0.1:1/none", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registerer: reg, MaxPending: 100})
	if err != nil {
		t.Fatal(err)
	}
	e := notify.Event{Kind: notify.KindWake, Tenant: "tnt_same"}
	for range 10 {
		n.Publish(e)
	}
	if got := n.Pending(); got != 1 {
		t.Errorf("Pending after 10 identical events = %d, want 1", got)
	}
	for i := range 10_000 {
		n.Publish(notify.Event{Kind: notify.KindWake, Tenant: tenant.ID(fmt.Sprintf("tnt_%d", i))})
	}
	if got := n.Pending(); got != 101 {
		t.Errorf("Pending after 10,000 tenants = %d, want 101 (100 and the every-tenant event)", got)
	}
	if got := testutil.ToFloat64(mustCounter(t, reg, "moat_notify_collapsed_total", "")); got != 10_000-99 {
		t.Errorf("collapsed = %v, want %d", got, 10_000-99)
	}
	// An event that cannot be rendered is dropped, not sent.
	n.Publish(notify.Event{Kind: "Bad Kind", Tenant: "tnt_x"})
	n.Publish(notify.Event{Kind: notify.KindWake, Tenant: "tnt with spaces"})
	if got := n.Pending(); got != 101 {
		t.Errorf("Pending after invalid events = %d, want 101", got)
	}
}

func TestConfig_ValidateJoinsProblems(t *testing.T) {
	err := notify.Config{Channel: "Bad-Channel", MaxPending: -1}.Validate()
	if err == nil {
		t.Fatal("Validate(bad config) = nil")
	}
	for _, want := range []string{"DSN is required", "Logger and Registerer", "channel", "MaxPending"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to mention %q", err, want)
		}
	}
	// A DSN that does not parse is refused without echoing it (it may hold a password).
	err = notify.Config{DSN: "postgres://u:s3cret@[::1", Logger: slog.Default(), Registerer: prometheus.NewRegistry()}.Validate()
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Validate(bad DSN) = %v, want an error without the password", err)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want notify.Event
	}{
		{"wake:tnt_1", notify.Event{Kind: notify.KindWake, Tenant: "tnt_1"}},
		{"wake:*", notify.Event{Kind: notify.KindWake, Tenant: notify.AllTenants}},
		{"token-revoked:tnt_1", notify.Event{Kind: "token-revoked", Tenant: "tnt_1"}},
	} {
		got, err := notify.Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		}
		if p, err := got.Payload(); err != nil || p != tc.in {
			t.Errorf("Payload(%+v) = %q, %v, want %q", got, p, err, tc.in)
		}
	}
	for _, in := range []string{"", "wake", "wake:", ":x", "wake:a:b", "Wake:x", "wake:x y", "wake:" + strings.Repeat("x", 65)} {
		if _, err := notify.Parse(in); !errors.Is(err, notify.ErrInvalidPayload) {
			t.Errorf("Parse(%q) = %v, want ErrInvalidPayload", in, err)
		}
	}
}

// FuzzParse: no panic, bounded input, and what parses re-renders to the same payload.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"wake:tnt_1", "wake:*", "revoke:tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f", "", ":", "wake::", "a:*:*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := notify.Parse(s)
		if err != nil {
			return
		}
		if len(s) > notify.MaxPayloadBytes {
			t.Fatalf("Parse accepted %d bytes", len(s))
		}
		p, err := e.Payload()
		if err != nil || p != s {
			t.Fatalf("Payload(Parse(%q)) = %q, %v, want the input", s, p, err)
		}
	})
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name, label string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label) {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("metric %s{%s} not found", name, label)
	return nil
}
