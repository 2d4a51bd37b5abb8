package mgmt_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// api is a raw HTTP caller for black-box tests of the management API. It deliberately does
// not use the client package, so these tests check the wire protocol itself.
type api struct {
	t     testing.TB
	srv   *testenv.Server
	http  *http.Client
	token string
}

func newAPI(t testing.TB, srv *testenv.Server, token string) *api {
	return &api{t: t, srv: srv, http: srv.HTTPClient(t), token: token}
}

func (a *api) as(token string) *api {
	b := *a
	b.token = token
	return &b
}

type resp struct {
	Status int
	Header http.Header
	Body   []byte
	Close  bool // the server closes the connection after this response
}

func (r resp) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
	Field  string `json:"field"`
}

func (r resp) problem(t testing.TB) problemBody {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json (body %s)", ct, r.Body)
	}
	var p problemBody
	r.decode(t, &p)
	if p.Status != r.Status {
		t.Errorf("problem status = %d, want HTTP status %d", p.Status, r.Status)
	}
	return p
}

// do sends a request; body is marshalled unless it is a string (sent raw).
func (a *api) do(method, path string, body any, hdr ...string) resp {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(a.t.Context(), method, a.srv.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := a.http.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp{Status: res.StatusCode, Header: res.Header, Body: b, Close: res.Close}
}

// must sends a request and fails the test unless the status is want.
func (a *api) must(want int, method, path string, body any, hdr ...string) resp {
	a.t.Helper()
	r := a.do(method, path, body, hdr...)
	if r.Status != want {
		a.t.Fatalf("%s %s = %d %s, want %d", method, path, r.Status, r.Body, want)
	}
	return r
}

type object struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Version  int64  `json:"version"`
	OSFeed   string `json:"os_feed"`
	Policy   string `json:"update_policy"`
	TenantID string `json:"tenant_id"`
}

type list struct {
	Items         []object `json:"items"`
	NextPageToken string   `json:"next_page_token"`
}

// world is two tenants, each with an administrator, a product and its groups.
type world struct {
	srv      *testenv.Server
	op       *api
	a, b     fixture
	readerA  *api
	contribA *api
}

type fixture struct {
	admin    *api
	tenant   string
	product  object
	group    object
	userID   string
	keyID    string
	deviceID string // a device the tenant claimed
	caID     string // the tenant's device CA (pending)
	tokenID  string // the admin's API token
	target   string // an uploaded image package by its TUF target name; set by tests that upload one
	// deployments are the group's two deployments, oldest first, written to the store
	// directly: their targets are in no apps.json, so a rollback to them is refused.
	deployments [2]string
}

func newWorld(t testing.TB, opts ...testenv.ServerOption) *world {
	srv := testenv.StartServer(t, opts...)
	op := newAPI(t, srv, srv.OperatorToken)
	w := &world{srv: srv, op: op}
	w.a = w.tenant(t, "Contoso")
	w.b = w.tenant(t, "Fabrikam")
	w.readerA = w.member(t, w.a, "reader", "Reader")
	w.contribA = w.member(t, w.a, "contributor", "Contributor")
	return w
}

func (w *world) tenant(t testing.TB, name string) fixture {
	var ten object
	w.op.must(201, "POST", "/api/v1/tenants", map[string]string{"name": name}).decode(t, &ten)
	// The operator created it and is its Administrator; make a dedicated admin user so that
	// tests act as a tenant's own staff, not as the platform operator.
	var mc struct {
		Member struct {
			User struct{ ID string } `json:"user"`
		} `json:"member"`
		Secret string `json:"secret"`
	}
	w.op.must(201, "POST", "/api/v1/tenants/"+ten.ID+"/members", map[string]string{"name": name + " admin", "role": "Administrator"}).decode(t, &mc)
	admin := w.op.as(mc.Secret)
	var p object
	admin.must(201, "POST", "/api/v1/tenants/"+ten.ID+"/products", map[string]string{"name": "DW100", "description": name + " dishwasher"}).decode(t, &p)
	var gs list
	admin.must(200, "GET", "/api/v1/tenants/"+ten.ID+"/products/"+p.ID+"/device-groups", nil).decode(t, &gs)
	var key object
	admin.must(201, "POST", "/api/v1/tenants/"+ten.ID+"/signing-keys", map[string]string{"name": "release", "public_key_pem": newPublicKeyPEM(t)}).decode(t, &key)
	var dev struct{ ID string }
	w.op.must(201, "POST", "/api/v1/platform/devices", map[string]string{"public_key_pem": newPublicKeyPEM(t)}).decode(t, &dev)
	admin.must(200, "POST", "/api/v1/tenants/"+ten.ID+"/device-claims", map[string]any{"device_ids": []string{dev.ID}})
	var cas, toks list
	admin.must(200, "GET", "/api/v1/tenants/"+ten.ID+"/device-cas", nil).decode(t, &cas)
	admin.must(200, "GET", "/api/v1/tokens", nil).decode(t, &toks)
	if len(cas.Items) == 0 || len(toks.Items) == 0 {
		t.Fatalf("tenant %s: %d device CAs and %d tokens, want one of each", ten.ID, len(cas.Items), len(toks.Items))
	}
	f := fixture{admin: admin, tenant: ten.ID, product: p, group: gs.Items[0], userID: mc.Member.User.ID, keyID: key.ID, deviceID: dev.ID,
		caID: cas.Items[0].ID, tokenID: toks.Items[0].ID}
	for i, v := range []string{"1.0.0", "1.0.1"} {
		f.deployments[i] = w.plantDeployment(t, f, "apps/"+strings.ToLower(name)+"-app/"+v)
	}
	return f
}

// plantDeployment stores a deployment of target to f's group directly, bypassing the
// catalog check, and returns its ID.
func (w *world) plantDeployment(t testing.TB, f fixture, target string) string {
	t.Helper()
	now := time.Now()
	d := device.Deployment{ID: ident.New(device.DeploymentIDPrefix, now), TenantID: tenant.ID(f.tenant), ProductID: product.ID(f.product.ID),
		GroupID: product.GroupID(f.group.ID), Target: target, SHA256: strings.Repeat("ab", 32), CreatedAt: now, CreatedBy: "planted"}
	err := w.srv.Store().InTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(d.TenantID)
		if err != nil {
			return err
		}
		return tt.Deployments().Create(t.Context(), d)
	})
	if err != nil {
		t.Fatalf("plant deployment %s: %v", target, err)
	}
	return d.ID
}

func (w *world) member(t testing.TB, f fixture, name, role string) *api {
	var mc struct {
		Secret string `json:"secret"`
	}
	f.admin.must(201, "POST", "/api/v1/tenants/"+f.tenant+"/members", map[string]string{"name": name, "role": role}).decode(t, &mc)
	return f.admin.as(mc.Secret)
}

func (f fixture) productPath() string {
	return "/api/v1/tenants/" + f.tenant + "/products/" + f.product.ID
}

func (f fixture) groupPath() string {
	return f.productPath() + "/device-groups/" + f.group.ID
}

// onBothStores runs fn against a server on SQLite and one on PostgreSQL: the API's
// behaviour must not depend on the database.
func onBothStores(t *testing.T, fn func(t *testing.T, w *world)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, newWorld(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, newWorld(t, testenv.WithDatabase(testenv.FreshPostgresDatabase(t))))
	})
}

// newPublicKeyPEM makes a fresh ECDSA P-256 public key in PEM, as `moat key generate` writes.
func newPublicKeyPEM(t testing.TB) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}
