package actions_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to look at the outbox in PostgreSQL

	"github.com/moat-iot/moat/examples/repairshop"
	"github.com/moat-iot/moat/internal/cloud/actions"
	"github.com/moat-iot/moat/internal/cloud/claimcode"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/rules"
	"github.com/moat-iot/moat/internal/cloud/shop"
	moatsqlite "github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/testenv"
)

const (
	shopToken = "shop-token-0123456789abcdef"
	heater    = "DW100-HTR-2"
	portal    = "https://cloud.example/portal/"
)

var t0 = time.Date(2026, 7, 1, 8, 0, 0, 0, time.UTC)

func deviceID(n int) string { return fmt.Sprintf("%064x", n) }

// recordingMailer records what it is asked to send.
type recordingMailer struct {
	mu   sync.Mutex
	sent []outbox.Mail
}

func (m *recordingMailer) Send(_ context.Context, mail outbox.Mail) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, mail)
	return nil
}

func (m *recordingMailer) mails() []outbox.Mail {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]outbox.Mail(nil), m.sent...)
}

// faultyStore is the real store with a fault knob: RecordReservation fails while
// failRecords > 0, as when the cloud crashes after the shop answered.
type faultyStore struct {
	*cloudstore.Store
	failRecords atomic.Int32
}

func (f *faultyStore) RecordReservation(ctx context.Context, r cloudstore.Reservation) (cloudstore.Reservation, error) {
	if f.failRecords.Add(-1) >= 0 {
		return cloudstore.Reservation{}, fmt.Errorf("injected crash before recording")
	}
	return f.Store.RecordReservation(ctx, r)
}

type env struct {
	t        *testing.T
	store    *faultyStore
	db       *sql.DB
	mailer   *recordingMailer
	shop     *repairshop.Server
	shopHits atomic.Int32
	now      time.Time
	file     *rules.File
	handlers outbox.Handlers
}

func exampleRules(t *testing.T) *rules.File {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "dw100", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := rules.Parse(data, "rules.yaml", rules.StandardActions())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// onBothStores runs test against SQLite and PostgreSQL (MOAT_TEST_POSTGRES_DSN; it
// fails without one when CI=true).
func onBothStores(t *testing.T, stock int, test func(t *testing.T, e *env)) {
	for _, dialect := range []string{cloudstore.SQLite, cloudstore.Postgres} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			test(t, newEnvOn(t, dialect, stock))
		})
	}
}

func newEnv(t *testing.T, stock int) *env { return newEnvOn(t, cloudstore.SQLite, stock) }

func newEnvOn(t *testing.T, dialect string, stock int) *env {
	t.Helper()
	dir := t.TempDir()
	var s *cloudstore.Store
	var db *sql.DB
	var err error
	if dialect == cloudstore.Postgres {
		dsn := testenv.FreshPostgresDatabase(t)
		if s, err = cloudstore.OpenPostgres(t.Context(), dsn); err == nil {
			db, err = sql.Open("pgx", dsn)
		}
	} else {
		path := filepath.Join(dir, "cloud.db")
		if s, err = cloudstore.OpenSQLite(t.Context(), path); err == nil {
			db, err = moatsqlite.OpenPool(t.Context(), path, false)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(); _ = s.Close() })
	e := &env{t: t, store: &faultyStore{Store: s}, db: db, mailer: &recordingMailer{}, now: t0.Add(time.Hour), file: exampleRules(t)}

	cfg := repairshop.DefaultConfig()
	cfg.Token, cfg.Stock = shopToken, map[string]int{heater: stock}
	e.shop, err = repairshop.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.shopHits.Add(1)
		e.shop.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	tf := filepath.Join(dir, "shop.token")
	if err := os.WriteFile(tf, []byte(shopToken), 0o600); err != nil {
		t.Fatal(err)
	}
	shops, err := shop.NewDirectory([]shop.Shop{{ID: "seattle-north", Name: "Seattle North", URL: ts.URL, TokenFile: tf}}, shop.DefaultClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	e.handlers, err = actions.Handlers(actions.Deps{
		Store: e.store, Mailer: e.mailer, Shops: shops, PortalURL: portal,
		Settings: actions.SettingsOf([]*rules.File{e.file}),
		Now:      func() time.Time { return e.now },
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// owner creates an owner of device (verified or not) with an appliance claimed at t0.
func (e *env) owner(device, email string, verified bool) cloudstore.Owner {
	e.t.Helper()
	ctx := e.t.Context()
	o, err := e.store.CreateOwner(ctx, cloudstore.NewOwner{Email: email, Name: "Ada Owner", PasswordHash: "$argon2id$v=19$m=65536,t=1,p=4$c2FsdA$aGFzaA", CreatedAt: t0})
	if err != nil {
		e.t.Fatal(err)
	}
	if verified {
		// The owners' package verifies through a mailed link; the test sets the column.
		if _, err := e.db.ExecContext(ctx, `UPDATE owners SET verified_us = $1 WHERE id = $2`, t0.UnixMicro(), o.ID); err != nil {
			e.t.Fatal(err)
		}
	}
	code := claimcode.New()
	hash, err := claimcode.Hash(code)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.PutClaimCodes(ctx, []cloudstore.ClaimCode{{Device: device, Product: "DW100", CodeHash: hash, CreatedAt: t0}}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.store.ClaimAppliance(ctx, o.ID, hash, t0); err != nil {
		e.t.Fatal(err)
	}
	return o
}

func (e *env) sale(device string, soldAt time.Time, shopID string) {
	e.t.Helper()
	if err := e.store.RecordSale(e.t.Context(), cloudstore.Sale{Device: device, Product: "DW100", SoldAt: soldAt, Shop: shopID, RecordedAt: t0}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) rule(name string) *rules.Rule {
	for _, r := range e.file.Rules {
		if r.Name == name {
			return r
		}
	}
	e.t.Fatalf("no rule %s", name)
	return nil
}

func (e *env) transition(rule, device string, at time.Time) rules.Transition {
	r := e.rule(rule)
	return rules.Transition{Change: rules.Fire, Rule: r.Name, Kind: r.Kind, Severity: r.Severity, Product: "DW100", Device: device,
		At: at, Value: 46.2, Message: "drying temperature 46.2 °C is unusual for DW100", Actions: r.Actions}
}

// open stores the alert of t with its outbox rows, as the cloud does, and returns the
// rows as the worker would hand them to handlers.
func (e *env) open(t rules.Transition) (cloudstore.Alert, []outbox.Job) {
	e.t.Helper()
	items := actions.Expand(t, nil)
	a, err := e.store.OpenAlert(e.t.Context(), cloudstore.NewAlert{Product: t.Product, Device: t.Device, Rule: t.Rule, Severity: string(t.Severity),
		OpenedAt: t.At, Value: t.Value, Message: t.Message, Evidence: []byte("[]"), Outbox: items})
	if err != nil {
		e.t.Fatalf("OpenAlert() = %v", err)
	}
	jobs := make([]outbox.Job, 0, len(items))
	for _, it := range items {
		jobs = append(jobs, outbox.Job{Kind: it.Kind, Key: it.Key, Device: it.Device, AlertID: a.ID, Payload: it.Payload, Attempt: 1, CreatedAt: t.At})
	}
	return a, jobs
}

func job(t *testing.T, jobs []outbox.Job, kind string) outbox.Job {
	t.Helper()
	for _, j := range jobs {
		if j.Kind == kind {
			return j
		}
	}
	t.Fatalf("no %s row among %d", kind, len(jobs))
	return outbox.Job{}
}

func (e *env) run(j outbox.Job) (string, error) {
	e.t.Helper()
	h, ok := e.handlers[j.Kind]
	if !ok {
		e.t.Fatalf("no handler of %s", j.Kind)
	}
	return h(e.t.Context(), j)
}

func (e *env) count(q string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRowContext(e.t.Context(), q, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}
