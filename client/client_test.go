package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/testenv"
)

func newClient(t *testing.T, s *testenv.Server, token string) *client.Client {
	t.Helper()
	c, err := client.New(s.URL, client.WithToken(token), client.WithCACertPEM(s.CAPEM))
	if err != nil {
		t.Fatalf("client.New(%q) = %v", s.URL, err)
	}
	return c
}

// TestClient_ImportsNothingInternal keeps the public client vendorable on its own.
func TestClient_ImportsNothingInternal(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps", "github.com/moat-iot/moat/client").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/moat-iot/moat/") && pkg != "github.com/moat-iot/moat/client" {
			t.Errorf("client depends on %s; it may import only the standard library", pkg)
		}
		if strings.Contains(pkg, "/internal/") && strings.Contains(pkg, "moat") {
			t.Errorf("client depends on internal package %s", pkg)
		}
	}
}

func TestNew_RejectsBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		url  string
		opts []client.Option
	}{
		{"NoScheme", "moat.example.com", nil},
		{"FTP", "ftp://moat.example.com", nil},
		{"PlainHTTPToNetwork", "http://moat.example.com", nil},
		{"UserInfo", "https://u:p@moat.example.com", nil},
		{"Query", "https://moat.example.com/?x=1", nil},
		{"CAWithoutCertificate", "https://moat.example.com", []client.Option{client.WithCACertPEM([]byte("not a pem"))}},
		{"CAAndInsecure", "https://moat.example.com", []client.Option{client.WithCACertPEM([]byte("x")), client.WithInsecureSkipVerify()}},
		{"HTTPClientAndCA", "https://moat.example.com", []client.Option{client.WithHTTPClient(http.DefaultClient), client.WithInsecureSkipVerify()}},
		{"TokenWithNewline", "https://moat.example.com", []client.Option{client.WithToken("moat_x\nEvil: 1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := client.New(tt.url, tt.opts...); err == nil {
				t.Errorf("client.New(%q) = %v, nil; want an error", tt.url, c.BaseURL())
			}
		})
	}
	for _, ok := range []string{"https://moat.example.com:8443", "https://moat.example.com/", "http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:2"} {
		if _, err := client.New(ok); err != nil {
			t.Errorf("client.New(%q) = %v, want nil", ok, err)
		}
	}
}

func TestError_Error(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  client.Error
		want string
	}{
		{client.Error{Status: 409, Code: "name_taken", Detail: "another product in the same scope already has this name", Field: "name"},
			"name_taken: another product in the same scope already has this name (field name)"},
		{client.Error{Status: 404, Code: "product_not_found", Detail: "no product prd_1"}, "product_not_found: no product prd_1"},
		{client.Error{Status: 502}, "HTTP 502 Bad Gateway"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("(%#v).Error() = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestClient_DecodesProblems checks that the server's problem documents arrive as *Error
// with their status, code, field and request ID.
func TestClient_DecodesProblems(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	ctx := t.Context()
	op := newClient(t, s, s.OperatorToken)

	anon := newClient(t, s, "")
	_, err := anon.GetMe(ctx)
	e := asError(t, "GetMe without a token", err)
	if e.Status != 401 || e.Code != "unauthenticated" || e.Type != "urn:moat:problem:unauthenticated" || e.RequestID == "" {
		t.Errorf("GetMe without a token = %+v, want 401 unauthenticated with a request ID", e)
	}

	_, err = op.CreateTenant(ctx, client.TenantCreate{Name: ""})
	e = asError(t, "CreateTenant(empty name)", err)
	if e.Status != 400 || e.Code != "name_required" || e.Field != "name" || len(e.Errors) != 1 || e.Errors[0].Field != "name" {
		t.Errorf("CreateTenant(empty name) = %+v, want 400 name_required on field name", e)
	}

	tnt, err := op.CreateTenant(ctx, client.TenantCreate{Name: "Contoso"})
	if err != nil {
		t.Fatalf("CreateTenant = %v", err)
	}
	_, err = op.CreateTenant(ctx, client.TenantCreate{Name: "Contoso"})
	e = asError(t, "CreateTenant(duplicate)", err)
	if e.Status != 409 || e.Code != "name_taken" || e.Field != "name" {
		t.Errorf("CreateTenant(duplicate) = %+v, want 409 name_taken on field name", e)
	}

	_, err = op.CreateDeviceGroup(ctx, tnt.ID, "prd_00000000000000000000000000000000", client.DeviceGroupCreate{Name: "", OSFeed: "Nightly"})
	e = asError(t, "CreateDeviceGroup(invalid)", err)
	if e.Status != 400 || len(e.Errors) != 3 {
		t.Errorf("CreateDeviceGroup(invalid) = %+v, want 400 with 3 field errors", e)
	}

	_, err = op.GetProduct(ctx, tnt.ID, "prd_00000000000000000000000000000000")
	e = asError(t, "GetProduct(missing)", err)
	if e.Status != 404 || e.Code != "product_not_found" {
		t.Errorf("GetProduct(missing) = %+v, want 404 product_not_found", e)
	}

	// A path segment with a slash stays one segment: no route, so 404, never another object.
	_, err = op.GetProduct(ctx, tnt.ID, "../../tenants")
	e = asError(t, "GetProduct(../../tenants)", err)
	if e.Status != 404 {
		t.Errorf("GetProduct(../../tenants) = %+v, want 404", e)
	}
}

func TestClient_ProductLifecycle(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	ctx := t.Context()
	c := newClient(t, s, s.OperatorToken)

	tnt, err := c.CreateTenant(ctx, client.TenantCreate{Name: "Contoso"})
	if err != nil {
		t.Fatalf("CreateTenant = %v", err)
	}
	p, err := c.CreateProduct(ctx, tnt.ID, client.ProductCreate{Name: "DW100", Description: "dishwasher"})
	if err != nil {
		t.Fatalf("CreateProduct = %v", err)
	}
	if p.Version != 1 || p.TenantID != tnt.ID || p.Name != "DW100" {
		t.Errorf("CreateProduct = %+v, want version 1 of DW100 in %s", p, tnt.ID)
	}

	// Pages of two walk all five default groups.
	groups, err := client.Collect(ctx, client.ListOptions{Limit: 2}, func(ctx context.Context, o client.ListOptions) (client.Page[client.DeviceGroup], error) {
		return c.ListDeviceGroups(ctx, tnt.ID, p.ID, o)
	})
	if err != nil {
		t.Fatalf("Collect(ListDeviceGroups) = %v", err)
	}
	if len(groups) != 5 {
		t.Errorf("Collect(ListDeviceGroups) = %d groups, want 5", len(groups))
	}
	byName, err := c.ListProducts(ctx, tnt.ID, client.ListOptions{Name: "DW100"})
	if err != nil || len(byName.Items) != 1 || byName.Items[0].ID != p.ID {
		t.Errorf("ListProducts(name DW100) = %+v, %v; want just %s", byName, err, p.ID)
	}

	name := "DW200"
	p2, err := c.UpdateProduct(ctx, tnt.ID, p.ID, p.Version, client.ProductUpdate{Name: &name})
	if err != nil {
		t.Fatalf("UpdateProduct = %v", err)
	}
	if p2.Version != 2 || p2.Name != "DW200" || p2.Description != "dishwasher" {
		t.Errorf("UpdateProduct = %+v, want version 2 named DW200 with its description kept", p2)
	}
	_, err = c.UpdateProduct(ctx, tnt.ID, p.ID, p.Version, client.ProductUpdate{Name: &name})
	if e := asError(t, "UpdateProduct(stale)", err); e.Status != 412 || e.Code != "etag_mismatch" {
		t.Errorf("UpdateProduct(stale) = %+v, want 412 etag_mismatch", e)
	}
	if _, err := c.UpdateProduct(ctx, tnt.ID, p.ID, 0, client.ProductUpdate{Name: &name}); err == nil {
		t.Error("UpdateProduct(version 0) = nil, want an error before any request")
	}
	err = c.DeleteProduct(ctx, tnt.ID, p.ID, p.Version)
	if e := asError(t, "DeleteProduct(stale)", err); e.Status != 412 {
		t.Errorf("DeleteProduct(stale) = %+v, want 412", e)
	}
	if err := c.DeleteProduct(ctx, tnt.ID, p.ID, p2.Version); err != nil {
		t.Fatalf("DeleteProduct = %v", err)
	}
	if _, err := c.GetProduct(ctx, tnt.ID, p.ID); asError(t, "GetProduct(deleted)", err).Status != 404 {
		t.Errorf("GetProduct(deleted) = %v, want 404", err)
	}
}

// TestClient_NonProblemResponses checks responses that do not come from moat's API.
func TestClient_NonProblemResponses(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/me", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html>bad gateway</html>"))
	})
	mux.HandleFunc("/api/v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		big := strings.Repeat("x", client.MaxResponseBytes)
		w.Write([]byte(`{"items":[],"next_page_token":"` + big + `"}`))
	})
	mux.HandleFunc("/api/v1/tenants", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			http.Redirect(w, r, "http://127.0.0.1:1/steal", http.StatusFound)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithToken("moat_tok_x.y"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	_, err = c.GetMe(ctx)
	if e := asError(t, "GetMe(502 html)", err); e.Status != 502 || e.Code != "" {
		t.Errorf("GetMe(502 html) = %+v, want status 502 without a code", e)
	}
	if _, err := c.ListTokens(ctx, client.ListOptions{}); err == nil || errors.As(err, new(*client.Error)) {
		t.Errorf("ListTokens(oversized) = %v, want a size error", err)
	}
	_, err = c.ListTenants(ctx, client.ListOptions{})
	if e := asError(t, "ListTenants(redirect)", err); e.Status != http.StatusFound {
		t.Errorf("ListTenants(redirect) = %+v, want the 302 itself, not followed", e)
	}
}

func TestClient_RespectsContext(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	c := newClient(t, s, s.OperatorToken)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.GetMe(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("GetMe(canceled ctx) = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := c.GetMe(ctx); err != nil {
		t.Errorf("GetMe = %v", err)
	}
}

func asError(t *testing.T, what string, err error) *client.Error {
	t.Helper()
	e, ok := errors.AsType[*client.Error](err)
	if !ok {
		t.Fatalf("%s = %v, want a *client.Error", what, err)
	}
	return e
}

// TestWireTypes checks the client against the server's route table: every operation has
// a method of the same name, and its request and response types have the same JSON shape
// as the server's.
func TestWireTypes(t *testing.T) {
	t.Parallel()
	ct := reflect.TypeFor[*client.Client]()
	for _, rt := range mgmt.Routes() {
		name := string(unicode.ToUpper(rune(rt.OperationID[0]))) + rt.OperationID[1:]
		t.Run(name, func(t *testing.T) {
			m, ok := ct.MethodByName(name)
			if !ok {
				t.Fatalf("client has no method %s for %s %s", name, rt.Method, rt.Pattern)
			}
			mt := m.Type
			if mt.NumIn() < 2 || mt.In(1) != reflect.TypeFor[context.Context]() {
				t.Errorf("%s does not take a context first", name)
			}
			if rt.Response != nil {
				if mt.NumOut() != 2 {
					t.Fatalf("%s returns %d values, want (T, error)", name, mt.NumOut())
				}
				got := mt.Out(0)
				if rt.List {
					f, ok := got.FieldByName("Items")
					if !ok || got.Name() == "" || !strings.HasPrefix(got.Name(), "Page[") {
						t.Fatalf("%s returns %v, want a client.Page", name, got)
					}
					got = f.Type.Elem()
				}
				if g, w := shape(got), shape(rt.Response); g != w {
					t.Errorf("%s response shape\n got %s\nwant %s", name, g, w)
				}
			} else if rt.RawResponse && (rt.RawResponseType == "application/octet-stream" || rt.RawResponseType == "text/csv") {
				if mt.NumOut() != 2 || mt.Out(0) != reflect.TypeFor[int64]() || !slices.Contains(ins(mt), reflect.TypeFor[io.Writer]()) {
					t.Errorf("%s streams a file; want (ctx, ..., io.Writer) (int64, error)", name)
				}
			} else if rt.RawResponse {
				if mt.NumOut() != 2 || mt.Out(0) != reflect.TypeFor[[]byte]() {
					t.Errorf("%s serves a file as is; want ([]byte, error)", name)
				}
			} else if mt.NumOut() != 1 {
				t.Errorf("%s returns %d values, want just an error", name, mt.NumOut())
			}
			if rt.RawRequest && rt.RawRequestType == "application/octet-stream" {
				if !slices.Contains(ins(mt), reflect.TypeFor[io.Reader]()) {
					t.Errorf("%s takes no io.Reader for its streamed body", name)
				}
			} else if rt.RawRequest && !slices.Contains(ins(mt), reflect.TypeFor[[]byte]()) {
				t.Errorf("%s takes no []byte for its signed body", name)
			}
			if rt.Request != nil {
				var body reflect.Type
				for i := 2; i < mt.NumIn(); i++ {
					if mt.In(i).Kind() == reflect.Struct {
						body = mt.In(i)
					}
				}
				if body == nil {
					// putMember's body is a single role, passed as an argument.
					body = reflect.TypeFor[struct {
						Role client.Role `json:"role"`
					}]()
				}
				if g, w := shape(body), shape(rt.Request); g != w {
					t.Errorf("%s request shape\n got %s\nwant %s", name, g, w)
				}
			}
			if rt.IfMatch != "" && !slices.ContainsFunc(ins(mt), func(t reflect.Type) bool { return t.Kind() == reflect.Int64 }) {
				t.Errorf("%s takes no int64 version for If-Match", name)
			}
		})
	}
}

func ins(t reflect.Type) []reflect.Type {
	var out []reflect.Type
	for i := range t.NumIn() {
		out = append(out, t.In(i))
	}
	return out
}

// shape describes a type as JSON sees it.
func shape(t reflect.Type) string {
	if t == reflect.TypeFor[time.Time]() {
		return "time"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return "*" + shape(t.Elem())
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Float64:
		return "number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
		return "[" + shape(t.Elem()) + "]"
	case reflect.Struct:
		var fields []string
		for f := range t.Fields() {
			tag := f.Tag.Get("json")
			if tag == "-" || !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if name == "" {
				name = f.Name
			}
			fields = append(fields, name+opts+":"+shape(f.Type))
		}
		sort.Strings(fields)
		return "{" + strings.Join(fields, " ") + "}"
	}
	return t.Kind().String()
}
