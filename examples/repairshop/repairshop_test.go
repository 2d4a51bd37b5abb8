package repairshop_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/moat-iot/moat/examples/repairshop"
)

const (
	token   = "shop-token-0123456789abcdef"
	roToken = "read-only-token-0123456789"
	device  = "4f2a000000000000000000000000000000000000000000000000000000000001"
)

var t0 = time.Date(2026, 7, 1, 8, 0, 0, 0, time.UTC)

func newShop(t *testing.T, stock map[string]int) (*repairshop.Server, *httptest.Server) {
	t.Helper()
	cfg := repairshop.DefaultConfig()
	cfg.Token, cfg.ReadOnlyToken, cfg.Stock = token, roToken, stock
	cfg.Now = func() time.Time { return t0 }
	s, err := repairshop.New(cfg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

type answer struct {
	status int
	ctype  string
	body   map[string]any
}

func call(t *testing.T, method, url, tok, key, ctype, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type")}
	_ = json.Unmarshal(data, &a.body)
	return a
}

func reqBody(part string) string {
	return `{"part":"` + part + `","device":"` + device + `","product":"DW100","customer_ref":"moat-alert-1","reason":"heater failing"}`
}

// TestServer_SameIdempotencyKeySameReservation: a retried reservation (the cloud crashed
// after the shop answered) gets the first one back and takes one part.
func TestServer_SameIdempotencyKeySameReservation(t *testing.T) {
	t.Parallel()
	s, ts := newShop(t, map[string]int{"HT-1": 2})
	first := call(t, "POST", ts.URL+"/v1/reservations", token, "k1", "application/json", reqBody("HT-1"))
	if first.status != 201 || first.body["state"] != "reserved" || first.body["part"] != "HT-1" || first.body["expires_at"] != "2026-07-04T08:00:00Z" {
		t.Fatalf("first reservation = %d %v", first.status, first.body)
	}
	for range 3 {
		again := call(t, "POST", ts.URL+"/v1/reservations", token, "k1", "application/json", reqBody("HT-1"))
		if again.status != 200 || again.body["id"] != first.body["id"] {
			t.Errorf("same key again = %d %v, want 200 and id %v", again.status, again.body, first.body["id"])
		}
	}
	if got := s.Stock("HT-1"); got != 1 {
		t.Errorf("stock after one reservation retried = %d, want 1", got)
	}
	if n := len(s.Reservations()); n != 1 {
		t.Errorf("reservations = %d, want 1", n)
	}
	reused := call(t, "POST", ts.URL+"/v1/reservations", token, "k1", "application/json", strings.Replace(reqBody("HT-1"), "heater failing", "other", 1))
	if reused.status != 409 || reused.body["type"] != repairshop.ProblemBase+"idempotency-key-reused" {
		t.Errorf("same key, other body = %d %v, want 409 idempotency-key-reused", reused.status, reused.body)
	}
}

// TestServer_OutOfStock: the last part reserved, the next key is a 409 out-of-stock problem.
func TestServer_OutOfStock(t *testing.T) {
	t.Parallel()
	_, ts := newShop(t, map[string]int{"HT-1": 1})
	if a := call(t, "POST", ts.URL+"/v1/reservations", token, "k1", "application/json", reqBody("HT-1")); a.status != 201 {
		t.Fatalf("first = %d %v", a.status, a.body)
	}
	for _, part := range []string{"HT-1", "NOT-CARRIED"} {
		a := call(t, "POST", ts.URL+"/v1/reservations", token, "k2-"+part, "application/json", reqBody(part))
		if a.status != 409 || a.ctype != "application/problem+json" || a.body["type"] != repairshop.ProblemBase+"out-of-stock" || a.body["status"] != 409.0 {
			t.Errorf("reserve %s with none left = %d %s %v, want a 409 out-of-stock problem", part, a.status, a.ctype, a.body)
		}
	}
}

// TestServer_RejectsBadToken: no token, a wrong one, another scheme: 401 and nothing
// reserved; the read-only token may look up but not reserve (403).
func TestServer_RejectsBadToken(t *testing.T) {
	t.Parallel()
	s, ts := newShop(t, map[string]int{"HT-1": 1})
	for _, tok := range []string{"", "wrong-token-0123456789abcdef", token + "x", strings.ToUpper(token)} {
		a := call(t, "POST", ts.URL+"/v1/reservations", tok, "k1", "application/json", reqBody("HT-1"))
		if a.status != 401 || a.body["type"] != repairshop.ProblemBase+"unauthorized" {
			t.Errorf("reserve with token %q = %d %v, want 401", tok, a.status, a.body)
		}
		if a := call(t, "GET", ts.URL+"/v1/parts/HT-1", tok, "", "", ""); a.status != 401 {
			t.Errorf("stock with token %q = %d, want 401", tok, a.status)
		}
	}
	if a := call(t, "POST", ts.URL+"/v1/reservations", roToken, "k1", "application/json", reqBody("HT-1")); a.status != 403 {
		t.Errorf("reserve with the read-only token = %d, want 403", a.status)
	}
	if a := call(t, "GET", ts.URL+"/v1/parts/HT-1", roToken, "", "", ""); a.status != 200 || a.body["in_stock"] != 1.0 {
		t.Errorf("stock with the read-only token = %d %v, want 200 in_stock 1", a.status, a.body)
	}
	if s.Stock("HT-1") != 1 || len(s.Reservations()) != 0 || s.Requests("POST /v1/reservations") != 0 {
		t.Errorf("refused requests changed the shop: stock %d, %d reservations", s.Stock("HT-1"), len(s.Reservations()))
	}
}

// TestServer_RejectsMalformedBodies: oversized, malformed, unknown fields, bad values,
// missing Idempotency-Key and another media type are refused and reserve nothing.
func TestServer_RejectsMalformedBodies(t *testing.T) {
	t.Parallel()
	s, ts := newShop(t, map[string]int{"HT-1": 5})
	huge := `{"part":"HT-1","reason":"` + strings.Repeat("a", repairshop.MaxBodyBytes) + `"}`
	for _, tt := range []struct {
		name, key, ctype, body string
		status                 int
	}{
		{"oversized", "k", "application/json", huge, 413},
		{"not json", "k", "application/json", "part=HT-1", 400},
		{"array", "k", "application/json", "[" + reqBody("HT-1") + "]", 400},
		{"trailing data", "k", "application/json", reqBody("HT-1") + "{}", 400},
		{"unknown field", "k", "application/json", strings.Replace(reqBody("HT-1"), `"part"`, `"owner_email":"a@b.c","part"`, 1), 400},
		{"wrong type", "k", "application/json", strings.Replace(reqBody("HT-1"), `"DW100"`, `7`, 1), 400},
		{"invalid utf-8", "k", "application/json", strings.Replace(reqBody("HT-1"), "heater", "\xff", 1), 400},
		{"bad part", "k", "application/json", reqBody("../etc"), 422},
		{"bad device", "k", "application/json", strings.Replace(reqBody("HT-1"), device, "DEVICE", 1), 422},
		{"control characters", "k", "application/json", strings.Replace(reqBody("HT-1"), "heater failing", `a\nb`, 1), 422},
		{"missing key", "", "application/json", reqBody("HT-1"), 422},
		{"bad key", "k y", "application/json", reqBody("HT-1"), 422},
		{"text body", "k", "text/plain", reqBody("HT-1"), 415},
	} {
		a := call(t, "POST", ts.URL+"/v1/reservations", token, tt.key, tt.ctype, tt.body)
		if a.status != tt.status || a.ctype != "application/problem+json" {
			t.Errorf("%s: = %d %s %v, want %d problem", tt.name, a.status, a.ctype, a.body, tt.status)
		}
	}
	if s.Stock("HT-1") != 5 || len(s.Reservations()) != 0 {
		t.Errorf("refused bodies changed the shop: stock %d, %d reservations", s.Stock("HT-1"), len(s.Reservations()))
	}
}

// TestServer_BoundsReservations: past MaxReservations a new key is refused (503) until
// reservations expire; the memory of keys does not grow with what callers send.
func TestServer_BoundsReservations(t *testing.T) {
	t.Parallel()
	now := t0
	cfg := repairshop.DefaultConfig()
	cfg.Token, cfg.Stock, cfg.MaxReservations, cfg.ReservationTTL = token, map[string]int{"HT-1": 100}, 2, time.Hour
	cfg.Now = func() time.Time { return now }
	s, err := repairshop.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	for i, want := range []int{201, 201, 503} {
		if a := call(t, "POST", ts.URL+"/v1/reservations", token, "k"+string(rune('a'+i)), "application/json", reqBody("HT-1")); a.status != want {
			t.Errorf("reservation %d = %d, want %d", i, a.status, want)
		}
	}
	now = now.Add(2 * time.Hour)
	if a := call(t, "POST", ts.URL+"/v1/reservations", token, "kz", "application/json", reqBody("HT-1")); a.status != 201 {
		t.Errorf("reservation after the others expired = %d, want 201", a.status)
	}
	if n := len(s.Reservations()); n != 1 {
		t.Errorf("reservations held = %d, want 1", n)
	}
}

// TestOpenAPI: the served contract is a valid OpenAPI 3.1 document naming both routes.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	_, ts := newShop(t, nil)
	resp, err := http.Get(ts.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" || doc.Paths.Find("/v1/parts/{part}") == nil || doc.Paths.Find("/v1/reservations") == nil {
		t.Errorf("openapi.json: version %s, paths %v", doc.OpenAPI, doc.Paths.InMatchingOrder())
	}
}

func TestParseStock(t *testing.T) {
	t.Parallel()
	st, err := repairshop.ParseStock([]byte("version: 1\nparts:\n  HT-1: 3\n"))
	if err != nil || st["HT-1"] != 3 {
		t.Errorf("ParseStock() = %v, %v", st, err)
	}
	for _, bad := range []string{"version: 2\nparts: {}\n", "version: 1\nparts: {HT-1: -1}\n", "version: 1\nparts: {\"a b\": 1}\n", "version: 1\nstock: {}\n", `{"version":1,"parts":{"HT-1":1.5}}`} {
		if _, err := repairshop.ParseStock([]byte(bad)); err == nil {
			t.Errorf("ParseStock(%q) = nil error", bad)
		}
	}
}
