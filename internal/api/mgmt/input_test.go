package mgmt_test

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
)

// TestAPI_RejectsBadInput sends malformed and invalid bodies to every write: each gets a 4xx
// problem+json naming the field, never a 500, and nothing is stored. Enforces rule 5.
func TestAPI_RejectsBadInput(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		products := "/api/v1/tenants/" + w.a.tenant + "/products"
		groups := w.a.productPath() + "/device-groups"
		long := strings.Repeat("x", 65)
		cases := []struct {
			name, method, path, body string
			ctype                    string
			status                   int
			code, field              string
		}{
			{"unknown field", "POST", products, `{"name":"A","colour":"red"}`, "", 400, "unknown_field", "colour"},
			{"wrong type", "POST", products, `{"name":42}`, "", 400, "wrong_type", "name"},
			{"empty name", "POST", products, `{"name":""}`, "", 400, "name_required", "name"},
			{"missing name", "POST", products, `{"description":"d"}`, "", 400, "name_required", "name"},
			{"over-long name", "POST", products, `{"name":"` + long + `"}`, "", 400, "name_too_long", "name"},
			{"multibyte name at limit+1", "POST", products, `{"name":"` + strings.Repeat("é", 65) + `"}`, "", 400, "name_too_long", "name"},
			{"padded name", "POST", products, `{"name":" DW200"}`, "", 400, "name_whitespace", "name"},
			{"control character", "POST", products, `{"name":"DW\u0007"}`, "", 400, "invalid_character", "name"},
			{"bad UTF-8", "POST", products, "{\"name\":\"DW\xff\xfe\"}", "", 400, "invalid_utf8", ""},
			{"escaped lone surrogate", "POST", products, `{"name":"DW\ud800"}`, "", 400, "invalid_utf8", "name"},
			{"over-long description", "POST", products, `{"name":"D","description":"` + strings.Repeat("d", 513) + `"}`, "", 400, "description_too_long", "description"},
			{"duplicate name", "POST", products, `{"name":"dw100"}`, "", 409, "name_taken", "name"},
			{"trailing data", "POST", products, `{"name":"A"} {"name":"B"}`, "", 400, "trailing_data", ""},
			{"not an object", "POST", products, `["A"]`, "", 400, "wrong_type", ""},
			{"truncated", "POST", products, `{"name":"A"`, "", 400, "malformed_json", ""},
			{"empty body", "POST", products, ``, "", 400, "body_required", ""},
			{"null body", "POST", products, `null`, "", 400, "name_required", "name"},
			{"wrong content type", "POST", products, `{"name":"A"}`, "text/plain", 415, "unsupported_media_type", ""},
			{"too large", "POST", products, `{"name":"A","description":"` + strings.Repeat("d", mgmt.MaxBodyBytes) + `"}`, "", 413, "body_too_large", ""},
			{"bad os feed", "POST", groups, `{"name":"G","os_feed":"Beta","update_policy":"UpdateAll"}`, "", 400, "invalid_os_feed", "os_feed"},
			{"missing policy", "POST", groups, `{"name":"G","os_feed":"Retail"}`, "", 400, "invalid_update_policy", "update_policy"},
			{"duplicate group", "POST", groups, `{"name":"production","os_feed":"Retail","update_policy":"UpdateAll"}`, "", 409, "name_taken", "name"},
			{"empty update", "PATCH", w.a.productPath(), `{}`, "", 400, "empty_update", ""},
			{"bad role", "POST", "/api/v1/tenants/" + w.a.tenant + "/members", `{"name":"x","role":"Owner"}`, "", 400, "invalid_role", "role"},
			{"bad token ttl", "POST", "/api/v1/tokens", `{"name":"x","expires_in":"forever"}`, "", 400, "invalid_duration", "expires_in"},
			{"token ttl too long", "POST", "/api/v1/tokens", `{"name":"x","expires_in":"10000h"}`, "", 400, "invalid_duration", "expires_in"},
			{"empty tenant name", "POST", "/api/v1/tenants", `{"name":""}`, "", 400, "name_required", "name"},
		}
		before := dumpTenant(t, w.a)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				caller := w.a.admin
				if tc.path == "/api/v1/tenants" {
					caller = w.op
				}
				hdr := []string{"If-Match", `"1"`}
				if tc.ctype != "" {
					hdr = append(hdr, "Content-Type", tc.ctype)
				}
				r := caller.do(tc.method, tc.path, tc.body, hdr...)
				if tc.body == "" {
					r = caller.do(tc.method, tc.path, []byte{}, hdr...)
				}
				if r.Status != tc.status {
					t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, r.Status, r.Body, tc.status)
				}
				p := r.problem(t)
				if p.Code != tc.code || p.Field != tc.field {
					t.Errorf("problem = code %q field %q, want code %q field %q (%s)", p.Code, p.Field, tc.code, tc.field, p.Detail)
				}
				if !strings.HasPrefix(p.Type, "urn:moat:problem:") || p.Title == "" || p.Detail == "" {
					t.Errorf("problem %+v lacks type, title or detail", p)
				}
			})
		}
		if diff := cmp.Diff(before, dumpTenant(t, w.a)); diff != "" {
			t.Errorf("refused requests changed the tenant (-before +after):\n%s", diff)
		}
		// Validation reports every field at once.
		r := w.a.admin.must(400, "POST", groups, `{"name":"","os_feed":"x","update_policy":"y"}`)
		var full struct {
			Errors []struct{ Field string } `json:"errors"`
		}
		r.decode(t, &full)
		if len(full.Errors) != 3 {
			t.Errorf("errors = %+v, want three fields (name, os_feed, update_policy)", full.Errors)
		}
	})
}

// FuzzDecodeBody feeds arbitrary bytes to the request decoder and validation of every body
// type: no panic, and anything accepted is valid and re-encodes to an accepted body.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"DW100","description":"dishwasher"}`,
		`{"name":"G","os_feed":"Retail","update_policy":"UpdateAll"}`,
		`{"name":"x","role":"Reader"}`,
		`{"name":"ci","expires_in":"720h"}`,
		`{"description":null}`,
		"{\"name\":\"\xff\"}",
		`{"name":"A"}{}`,
		`[]`, `null`, `"x"`, `{"name":1e999}`,
	} {
		f.Add([]byte(s))
	}
	types := []reflect.Type{}
	for _, rt := range mgmt.Routes() {
		if rt.Request != nil {
			types = append(types, rt.Request)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, typ := range types {
			v, err := mgmt.DecodeBody(body, typ)
			if err != nil {
				if p, ok := errors.AsType[*problem.Error](err); !ok || p.Kind == problem.Internal {
					t.Fatalf("DecodeBody(%q, %v) error %v is not a client problem", body, typ, err)
				}
				continue
			}
			if val, ok := v.(mgmt.Validator); ok {
				if err := val.Validate(); err != nil {
					t.Fatalf("DecodeBody(%q, %v) accepted an invalid body: %v", body, typ, err)
				}
			}
		}
	})
}

func TestDecodeBody_GroupUpdateNull(t *testing.T) {
	t.Parallel()
	// null for a field of a merge patch leaves it unchanged rather than clearing it.
	v, err := mgmt.DecodeBody([]byte(`{"description":null,"name":"N"}`), reflect.TypeFor[product.GroupUpdate]())
	if err != nil {
		t.Fatalf("DecodeBody = %v", err)
	}
	u := v.(product.GroupUpdate)
	if u.Description != nil || u.Name == nil || *u.Name != "N" {
		t.Errorf("decoded %+v, want name N and description untouched", u)
	}
	_ = http.StatusOK
}
