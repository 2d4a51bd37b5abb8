package mgmt_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/blob/fsblob"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqlite"
)

// replica is one management API over a database it shares with the others, as `moat
// server` replicas share PostgreSQL; requests go straight to its handler.
type replica struct {
	t   testing.TB
	api *mgmt.API
	mux *http.ServeMux
}

// serve sends a request with a JSON body (nil: none) and returns the recorded answer.
func (r *replica) serve(token, method, path string, body any) *httptest.ResponseRecorder {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			r.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequestWithContext(r.t.Context(), method, path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	r.mux.ServeHTTP(rec, req)
	return rec
}

// decodeRec decodes a 2xx answer's JSON into v.
func decodeRec(t testing.TB, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if rec.Code/100 != 2 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatal(err)
	}
}

func (r *replica) must(want int, token, method, path string, body any) {
	r.t.Helper()
	if rec := r.serve(token, method, path, body); rec.Code != want {
		r.t.Fatalf("%s %s = %d %s, want %d", method, path, rec.Code, rec.Body, want)
	}
}

// newReplicas opens one SQLite database and n management APIs over it; publish, when set,
// is replica i's Config.PublishAuthChange.
func newReplicas(t testing.TB, n int, publish func(i int) mgmt.Invalidator) (store.Store, []*replica) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	online, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := fsblob.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil)) // formatted as in production, then dropped
	rs := make([]*replica, n)
	for i := range rs {
		rp, err := repo.New(st, blobs, online, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		fl, err := fleet.New(fleet.Config{Store: st, Repo: rp, Logger: log, Now: time.Now, KEK: bytes.Repeat([]byte{7}, 32),
			Director: online, Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		cfg := mgmt.Config{Store: st, Logger: log, Now: time.Now, Metrics: mgmt.NewMetrics(reg), Repo: rp, Fleet: fl}
		if publish != nil {
			cfg.PublishAuthChange = publish(i)
		}
		a, err := mgmt.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		a.Register(mux)
		rs[i] = &replica{t: t, api: a, mux: mux}
	}
	return st, rs
}

// newOperator stores a platform operator and its token directly, as `moat server` does at
// its first start.
func newOperator(t testing.TB, st store.Store) string {
	t.Helper()
	now := time.Now()
	u := auth.User{ID: "usr_01a24b07de1c9c95e7397fa86db9a6a3", Name: "operator", PlatformOperator: true, CreatedAt: now}
	tok, secret := auth.NewToken(u.ID, "bootstrap", now, 0)
	err := st.InTx(t.Context(), func(tx store.Tx) error {
		if err := tx.Users().Create(t.Context(), u); err != nil {
			return err
		}
		return tx.Tokens().Create(t.Context(), tok)
	})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// A revocation, a member's removal or a role change on one replica stops the token on
// another at its next request, through the publisher and InvalidateAuth: the payload
// travels as a notification would ("kind:id"), parsed on the receiving side.
func TestAuth_InvalidatorClearsEntry(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var payloads []string
	var rs []*replica
	st, rs := newReplicas(t, 2, func(i int) mgmt.Invalidator {
		return func(kind, id string) {
			payload := mgmt.AuthChangePayload(kind, id)
			mu.Lock()
			payloads = append(payloads, payload)
			mu.Unlock()
			for j, r := range rs { // the broadcast reaches every other replica
				if j == i {
					continue
				}
				k, id, err := mgmt.ParseAuthChange(payload)
				if err != nil {
					k, id = mgmt.AuthChangeAll, ""
				}
				r.api.InvalidateAuth(k, id)
			}
		}
	})
	a, b := rs[0], rs[1]
	op := newOperator(t, st)

	var ten struct{ ID string }
	var mc struct {
		Member struct {
			User struct{ ID string } `json:"user"`
		} `json:"member"`
		Token  struct{ ID string } `json:"token"`
		Secret string              `json:"secret"`
	}
	decodeRec(t, a.serve(op, "POST", "/api/v1/tenants", map[string]string{"name": "Contoso"}), &ten)
	products := "/api/v1/tenants/" + ten.ID + "/products"
	// The creator holds its role on the other replica at once, too.
	b.must(200, op, "GET", products, nil)

	newMember := func(role string) {
		decodeRec(t, a.serve(op, "POST", "/api/v1/tenants/"+ten.ID+"/members", map[string]string{"name": "bob-" + role, "role": role}), &mc)
	}

	// Revoked on A: B refuses the token it holds in its cache.
	newMember("Reader")
	for range 3 {
		b.must(200, mc.Secret, "GET", products, nil)
	}
	a.must(200, mc.Secret, "DELETE", "/api/v1/tokens/"+mc.Token.ID, nil)
	b.must(401, mc.Secret, "GET", products, nil)
	want := []string{"token:" + mc.Token.ID}

	// Removed on A: the tenant vanishes for the member on B.
	newMember("Contributor")
	for range 3 {
		b.must(200, mc.Secret, "GET", products, nil)
	}
	a.must(204, op, "DELETE", "/api/v1/tenants/"+ten.ID+"/members/"+mc.Member.User.ID, nil)
	b.must(404, mc.Secret, "GET", products, nil)
	want = append(want, "user:"+mc.Member.User.ID)

	// Demoted on A: B refuses the write.
	newMember("Contributor")
	b.must(201, mc.Secret, "POST", products, map[string]string{"name": "X1"})
	a.must(200, op, "PUT", "/api/v1/tenants/"+ten.ID+"/members/"+mc.Member.User.ID, map[string]string{"role": "Reader"})
	b.must(403, mc.Secret, "POST", products, map[string]string{"name": "X2"})
	want = append(want, "user:"+mc.Member.User.ID)

	mu.Lock()
	defer mu.Unlock()
	for _, w := range want {
		if !slices.Contains(payloads, w) {
			t.Errorf("published %q, want %s among them", payloads, w)
		}
	}
}
