package shop_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/examples/repairshop"
	"github.com/moat-iot/moat/internal/cloud/shop"
)

const (
	token  = "shop-token-0123456789abcdef"
	device = "4f2a000000000000000000000000000000000000000000000000000000000001"
)

// clientOf returns a client of h with token tok, served on loopback.
func clientOf(t *testing.T, h http.Handler, tok string, timeout time.Duration) *shop.Client {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	tf := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tf, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := shop.DefaultClientConfig()
	if timeout > 0 {
		cfg.Timeout = timeout
	}
	c, err := shop.NewClient(shop.Shop{ID: "seattle-north", Name: "Seattle North", URL: ts.URL + "/inventory/", TokenFile: tf}, cfg)
	if err != nil {
		t.Fatalf("NewClient() = %v", err)
	}
	return c
}

func referenceShop(t *testing.T, stock map[string]int) *repairshop.Server {
	t.Helper()
	cfg := repairshop.DefaultConfig()
	cfg.Token, cfg.Stock = token, stock
	s, err := repairshop.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var req = shop.ReservationRequest{Part: "HT-1", Device: device, Product: "DW100", CustomerRef: "moat-alert-1", Reason: "heater failing"}

// TestClient_ReferenceShop: the client and the reference shop keep one contract: stock,
// a reservation, the same one for the same key, and out of stock.
func TestClient_ReferenceShop(t *testing.T) {
	t.Parallel()
	s := referenceShop(t, map[string]int{"HT-1": 1})
	c := clientOf(t, http.StripPrefix("/inventory", s), token, 0)
	st, err := c.Part(t.Context(), "HT-1")
	if err != nil || st.InStock != 1 {
		t.Fatalf("Part() = %+v, %v", st, err)
	}
	r1, err := c.Reserve(t.Context(), "reserve-part:k1", req)
	if err != nil || r1.State != shop.StateReserved || r1.ID == "" {
		t.Fatalf("Reserve() = %+v, %v", r1, err)
	}
	r2, err := c.Reserve(t.Context(), "reserve-part:k1", req)
	if err != nil || r2.ID != r1.ID {
		t.Errorf("Reserve() again = %+v, %v, want %s", r2, err, r1.ID)
	}
	_, err = c.Reserve(t.Context(), "reserve-part:k2", req)
	if !errors.Is(err, shop.ErrOutOfStock) || shop.Temporary(err) {
		t.Errorf("Reserve() with none left = %v, want ErrOutOfStock, not temporary", err)
	}
	if _, err := c.Part(t.Context(), "NOPE"); err == nil {
		t.Error("Part(unknown) = nil error")
	}
}

// TestClient_RejectedTokenIsPermanent: a 401 is not retried.
func TestClient_RejectedTokenIsPermanent(t *testing.T) {
	t.Parallel()
	c := clientOf(t, http.StripPrefix("/inventory", referenceShop(t, map[string]int{"HT-1": 1})), "wrong-token-0123456789", 0)
	_, err := c.Reserve(t.Context(), "k", req)
	se, ok := errors.AsType[*shop.StatusError](err)
	if !ok || se.Status != 401 || se.Problem.Type != shop.TypeUnauthorized || shop.Temporary(err) {
		t.Errorf("Reserve() with a wrong token = %v, want a permanent 401", err)
	}
}

// TestClient_DoesNotFollowRedirects: a redirect could carry the bearer token to another
// host; the other host sees nothing.
func TestClient_DoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	var stolen atomic.Int32
	thief := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { stolen.Add(1) }))
	t.Cleanup(thief.Close)
	c := clientOf(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, thief.URL+"/v1/reservations", http.StatusTemporaryRedirect)
	}), token, 0)
	if _, err := c.Reserve(t.Context(), "k", req); err == nil || shop.Temporary(err) {
		t.Errorf("Reserve() redirected = %v, want a permanent error", err)
	}
	if n := stolen.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests, want 0", n)
	}
}

// TestClient_BoundsReplies: an endless reply, a slow one, a 2xx that is not JSON and a
// reply for another part are refused; 5xx and those are worth retrying.
func TestClient_BoundsReplies(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"endless", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(201)
			chunk := []byte(strings.Repeat(" ", 4096))
			for range 1000 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}},
		{"slow", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body) // so the server notices the client hanging up
			<-r.Context().Done()
		}},
		{"html", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(201)
			_, _ = w.Write([]byte(`{"id":"R-1","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`))
		}},
		{"other part", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(201)
			_, _ = w.Write([]byte(`{"id":"R-1","part":"HT-2","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`))
		}},
		{"server error", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }},
	} {
		c := clientOf(t, tt.h, token, 300*time.Millisecond)
		_, err := c.Reserve(t.Context(), "k", req)
		if err == nil || !shop.Temporary(err) {
			t.Errorf("%s: Reserve() = %v, want a temporary error", tt.name, err)
		}
	}
}

func TestClient_SendsTheContract(t *testing.T) {
	t.Parallel()
	var got *http.Request
	c := clientOf(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		_, _ = w.Write([]byte(`{"id":"R-1","part":"HT-1","state":"reserved","expires_at":"2026-07-04T08:00:00Z"}`))
	}), token, 0)
	if _, err := c.Reserve(t.Context(), "reserve-part:DW100:x:1", req); err != nil {
		t.Fatal(err)
	}
	if got.URL.Path != "/inventory/v1/reservations" || got.Header.Get("Authorization") != "Bearer "+token ||
		got.Header.Get("Idempotency-Key") != "reserve-part:DW100:x:1" || got.Header.Get("Content-Type") != "application/json" {
		t.Errorf("request = %s %s %v", got.Method, got.URL.Path, got.Header)
	}
}

func TestReadToken_RefusesHeaderInjection(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for i, bad := range []string{"", "tok en", "tok\r\nX-Evil: 1", "tok\n\n", strings.Repeat("a", shop.MaxTokenBytes+1)} {
		p := filepath.Join(dir, "t"+string(rune('a'+i)))
		if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := shop.ReadToken(p); err == nil {
			t.Errorf("ReadToken(%.20q) = nil error", bad)
		}
	}
}
