package portal

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/cloud/claimcode"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/owners"
	moatsqlite "github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/telemetry"
)

// clock is the portal's injected clock: real time (cookies' Max-Age counts from it) plus
// an offset the test moves.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().UTC().Add(c.offset)
}
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// world is a portal on a TLS test server over a real SQLite store.
type world struct {
	t      *testing.T
	srv    *httptest.Server
	portal *Portal
	owners *owners.Service
	store  *cloudstore.Store
	path   string
	clock  *clock
	seq    uint64
	// logs holds everything the portal and the owners' service logged.
	logs *logBuffer
}

// logBuffer is a bytes.Buffer safe for the server's goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var shops = []Shop{{ID: "seattle-north", Name: "Seattle North Appliance Repair"}, {ID: "tacoma", Name: "Tacoma Fix-It"}}

func newWorld(t *testing.T) *world {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cloud.db")
	st, err := cloudstore.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := &clock{}
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	svc, err := owners.New(owners.Config{Store: st, BaseURL: srv.URL, Now: c.Now, Logger: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Owners: svc, Store: st, Now: c.Now, Logger: log,
		Shops: func() []Shop { return shops },
		Warranty: func(product string) time.Duration {
			if product == "dw100" {
				return 2 * 365 * 24 * time.Hour
			}
			return 0
		}})
	if err != nil {
		t.Fatal(err)
	}
	p.Register(mux)
	return &world{t: t, srv: srv, portal: p, owners: svc, store: st, path: path, clock: c, logs: logs}
}

// verifyLink returns the last verification link mailed to email, read from the outbox.
func (w *world) verifyLink(email string) string {
	w.t.Helper()
	link := w.mailedLink(email, "/portal/verify?token=")
	if link == "" {
		w.t.Fatalf("no verification link mailed to %s", email)
	}
	return link
}

// resetLink returns the last password reset link mailed to email.
func (w *world) resetLink(email string) string {
	w.t.Helper()
	link := w.mailedLink(email, "/portal/reset/confirm?token=")
	if link == "" {
		w.t.Fatalf("no reset link mailed to %s", email)
	}
	return link
}

// mailedLink returns the last link to path mailed to email, read from the outbox ("" when
// there is none).
func (w *world) mailedLink(email, path string) string {
	w.t.Helper()
	db, err := moatsqlite.OpenPool(w.t.Context(), w.path, true)
	if err != nil {
		w.t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(w.t.Context(), `SELECT payload FROM outbox WHERE kind = $1 ORDER BY id`, outbox.KindEmail)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	link := ""
	for rows.Next() {
		var p string
		var m outbox.EmailPayload
		if err := rows.Scan(&p); err != nil || json.Unmarshal([]byte(p), &m) != nil {
			w.t.Fatalf("outbox row %q: %v", p, err)
		}
		if m.To == email {
			if i := strings.Index(m.Text, w.srv.URL+path); i >= 0 {
				link = strings.Fields(m.Text[i:])[0]
			}
		}
	}
	if err := rows.Err(); err != nil {
		w.t.Fatal(err)
	}
	return link
}

// owner signs email up and verifies it through the service.
func (w *world) owner(email, password string) cloudstore.Owner {
	w.t.Helper()
	if err := w.owners.SignUp(w.t.Context(), email, "Owner of "+email, password, "192.0.2.200:1"); err != nil {
		w.t.Fatal(err)
	}
	u, _ := url.Parse(w.verifyLink(email))
	o, err := w.owners.Verify(w.t.Context(), u.Query().Get("token"))
	if err != nil {
		w.t.Fatal(err)
	}
	return o
}

// code stores a manufacture claim code for device, sold now, and returns it.
func (w *world) code(device string) string {
	w.t.Helper()
	c := claimcode.New()
	h, _ := claimcode.Hash(c)
	now := w.clock.Now()
	if err := w.store.PutClaimCodes(w.t.Context(), []cloudstore.ClaimCode{{Device: device, Product: "dw100", CodeHash: h, CreatedAt: now}}); err != nil {
		w.t.Fatal(err)
	}
	if err := w.store.RecordSale(w.t.Context(), cloudstore.Sale{Device: device, Product: "dw100", SoldAt: now.Add(-30 * 24 * time.Hour), Shop: "seattle-north", RecordedAt: now}); err != nil {
		w.t.Fatal(err)
	}
	return c
}

// claimed gives owner o the appliance device.
func (w *world) claimed(o cloudstore.Owner, device string) cloudstore.Appliance {
	w.t.Helper()
	a, err := w.owners.Claim(w.t.Context(), o.ID, w.code(device), "192.0.2.201:1")
	if err != nil {
		w.t.Fatal(err)
	}
	return a
}

// cycles stores n wash cycles of device from start, a minute apart: drying-phase
// telemetry and a cycle_end event with water and energy used.
func (w *world) cycles(device string, start time.Time, n int) {
	w.t.Helper()
	var recs []cloudstore.Record
	for i := range n {
		at := start.Add(time.Duration(i) * time.Minute)
		cycle := "c" + at.Format("150405") + string(rune('a'+i%26))
		w.seq++
		recs = append(recs, cloudstore.Record{Seq: w.seq, Device: device, Product: "dw100", ReceivedAt: at,
			Telemetry: &telemetry.Telemetry{V: 1, Time: at, Cycle: cycle, Phase: "drying",
				Readings: map[string]telemetry.Reading{"drying_temp": {Value: 60 + float64(i), Unit: "Cel"}}}})
		w.seq++
		recs = append(recs, cloudstore.Record{Seq: w.seq, Device: device, Product: "dw100", ReceivedAt: at.Add(30 * time.Second),
			Event: &telemetry.Event{V: 1, Time: at.Add(30 * time.Second), Name: "cycle_end", Cycle: cycle,
				Readings: map[string]telemetry.Reading{"water_used": {Value: 10 + float64(i%3), Unit: "L"}, "energy_used": {Value: 1.1, Unit: "kWh"}}}})
	}
	if _, err := w.store.WriteBatch(w.t.Context(), recs); err != nil {
		w.t.Fatal(err)
	}
}

// browser is an HTTP client with its own cookie jar, as one browser.
type browser struct {
	w      *world
	c      *http.Client
	header http.Header // sent with every request
}

func (w *world) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := *w.srv.Client() // a copy: the server's client is one, shared
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{w: w, c: &c, header: http.Header{}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// get returns the status and body of GET path.
func (b *browser) get(path string) (int, string) {
	b.w.t.Helper()
	return b.do(http.MethodGet, path, nil)
}

// csrf returns the CSRF token of the form on page path.
func (b *browser) csrf(path string) string {
	b.w.t.Helper()
	_, body := b.get(path)
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		b.w.t.Fatalf("no CSRF token on %s:\n%s", path, body)
	}
	return m[1]
}

// post posts form to path and returns the status and body.
func (b *browser) post(path string, form url.Values) (int, string) {
	b.w.t.Helper()
	return b.do(http.MethodPost, path, form)
}

func (b *browser) do(method, path string, form url.Values) (int, string) {
	b.w.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(b.w.t.Context(), method, b.w.srv.URL+path, body)
	if err != nil {
		b.w.t.Fatal(err)
	}
	for k, v := range b.header {
		req.Header[k] = v
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.w.t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	if res.Header.Get("Content-Security-Policy") == "" {
		b.w.t.Errorf("%s %s: no Content-Security-Policy header", method, path)
	}
	return res.StatusCode, string(out)
}

// signIn signs the browser in as email.
func (b *browser) signIn(email, password string) {
	b.w.t.Helper()
	tok := b.csrf("/portal/sign-in")
	if st, body := b.post("/portal/sign-in", url.Values{"csrf": {tok}, "email": {email}, "password": {password}}); st != http.StatusSeeOther {
		b.w.t.Fatalf("sign in as %s = %d:\n%s", email, st, body)
	}
}

var codeRE = regexp.MustCompile(`id="handover-code">([0-9A-Z-]+)<`)
