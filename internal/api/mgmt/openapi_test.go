package mgmt_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/moat-iot/moat/internal/api/mgmt"
)

// loadOpenAPI fetches the served document and checks it with kin-openapi, an OpenAPI
// implementation independent of the generator.
func loadOpenAPI(t *testing.T, w *world) (*openapi3.T, routers.Router) {
	t.Helper()
	r := w.op.as("").must(200, "GET", "/api/v1/openapi.json", nil)
	doc, err := openapi3.NewLoader().LoadFromData(r.Body)
	if err != nil {
		t.Fatalf("load OpenAPI document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("OpenAPI document is invalid: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: w.srv.URL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("route OpenAPI document: %v", err)
	}
	return doc, router
}

// TestOpenAPI_MatchesRoutes checks that the document has exactly the table's operations.
func TestOpenAPI_MatchesRoutes(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		doc, _ := loadOpenAPI(t, w)
		want := map[string]bool{"GET /api/v1/openapi.json": true}
		for _, rt := range mgmt.Routes() {
			want[rt.Method+" "+mgmt.OpenAPIPath(rt.Pattern)] = true
		}
		got := map[string]bool{}
		for path, item := range doc.Paths.Map() {
			for method, op := range item.Operations() {
				got[method+" "+path] = true
				if op.OperationID == "" || op.Summary == "" {
					t.Errorf("%s %s: no operationId or summary", method, path)
				}
			}
		}
		for k := range want {
			if !got[k] {
				t.Errorf("route %s is missing from the OpenAPI document", k)
			}
		}
		for k := range got {
			if !want[k] {
				t.Errorf("OpenAPI operation %s has no route", k)
			}
		}
	})
}

// TestOpenAPI_ResponsesMatchSchema drives a real session through the API and validates each
// request and response against the served document.
func TestOpenAPI_ResponsesMatchSchema(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		_, router := loadOpenAPI(t, w)
		a := w.a
		check := func(caller *api, method, path string, body string, hdr ...string) resp {
			t.Helper()
			var rb any
			if body != "" {
				rb = body
			}
			r := caller.do(method, path, rb, hdr...)
			req, err := http.NewRequest(method, w.srv.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			req.Header.Set("Authorization", "Bearer "+caller.token)
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatalf("%s %s: not in the OpenAPI document: %v", method, path, err)
			}
			in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
			if r.Status < 400 {
				if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
					t.Errorf("%s %s: request does not match the document: %v", method, path, err)
				}
			}
			out := &openapi3filter.ResponseValidationInput{
				RequestValidationInput: in, Status: r.Status, Header: r.Header,
				Body:    io.NopCloser(bytes.NewReader(r.Body)),
				Options: &openapi3filter.Options{IncludeResponseStatus: true},
			}
			if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
				t.Errorf("%s %s = %d: response does not match the document: %v", method, path, r.Status, err)
			}
			return r
		}
		tenants := "/api/v1/tenants"
		products := tenants + "/" + a.tenant + "/products"
		check(a.admin, "GET", "/api/v1/me", "")
		check(w.op, "GET", tenants, "")
		check(w.op, "POST", tenants, `{"name":"Northwind"}`)
		check(a.admin, "GET", tenants+"/"+a.tenant, "")
		check(a.admin, "GET", products+"?limit=2", "")
		check(a.admin, "GET", tenants+"/"+a.tenant+"/fleet-status?product=DW100", "")
		check(a.admin, "GET", tenants+"/"+a.tenant+"/fleet-status", "") // 400 problem: product required
		check(a.admin, "GET", tenants+"/"+a.tenant+"/device-statuses?product=DW100&state=pending", "")
		check(a.admin, "GET", tenants+"/"+a.tenant+"/devices?product=DW100&group=Production&state=current", "")
		check(a.admin, "GET", products+"?name=DW100", "")
		var p object
		check(a.admin, "POST", products, `{"name":"DW200","description":"next model"}`).decode(t, &p)
		check(a.admin, "POST", products, `{"name":"DW200"}`) // 409 problem
		check(a.admin, "POST", products, `{"name":""}`)      // 400 problem
		pp := products + "/" + p.ID
		check(a.admin, "GET", pp, "")
		check(a.admin, "PATCH", pp, `{"description":"changed"}`, "If-Match", `"1"`)
		check(a.admin, "PATCH", pp, `{"description":"stale"}`, "If-Match", `"1"`) // 412
		check(a.admin, "PATCH", pp, `{"description":"none"}`)                     // 428
		var g object
		check(a.admin, "POST", pp+"/device-groups", `{"name":"Beta","os_feed":"RetailEval","update_policy":"UpdateAll"}`).decode(t, &g)
		check(a.admin, "GET", pp+"/device-groups", "")
		check(a.admin, "GET", pp+"/device-groups/"+g.ID, "")
		check(a.admin, "PATCH", pp+"/device-groups/"+g.ID, `{"os_feed":"Retail"}`, "If-Match", `"1"`)
		check(a.admin, "DELETE", pp+"/device-groups/"+g.ID, "")
		check(a.admin, "DELETE", pp, "", "If-Match", `"2"`)
		check(a.admin, "GET", pp, "") // 404 problem
		deps := a.groupPath() + "/deployments"
		check(a.admin, "GET", deps, "")
		check(a.admin, "GET", deps+"/"+a.deployments[0], "")
		check(a.admin, "POST", deps+"/rollback", `{}`)                              // 400 problem: the planted target is in no apps.json
		check(a.admin, "POST", deps+"/rollback", `{"to":"`+w.b.deployments[0]+`"}`) // 404 problem
		staged := deps + "/" + w.plantStaged(t, a, "apps/contoso-app/2.0.0")
		check(a.admin, "GET", staged+"/status", "")
		check(a.admin, "POST", staged+"/pause", `{"reason":"a look"}`)
		check(a.admin, "POST", staged+"/pause", `{}`)                                                                                                           // 409 problem
		check(a.admin, "POST", staged+"/promote", `{"force":true}`)                                                                                             // resumes and opens stage 2
		check(a.admin, "GET", staged+"/status", "")                                                                                                             // with next_stage_at
		check(a.admin, "GET", deps+"/"+a.deployments[0]+"/status", "")                                                                                          // 404 problem: no rollout
		check(a.admin, "POST", deps+"/"+a.deployments[0]+"/abort", `{}`)                                                                                        // 409 problem: no rollout
		check(a.admin, "POST", deps, `{"target":"apps/contoso-app/2.0.0","rollout":{"stages":[1],"soak":"1h","gate":{"min_device_hours":1,"min_installs":1}}}`) // 400 problem
		var mc struct {
			Member struct {
				User struct{ ID string } `json:"user"`
			} `json:"member"`
		}
		check(a.admin, "POST", tenants+"/"+a.tenant+"/members", `{"name":"support","role":"Reader"}`).decode(t, &mc)
		check(a.admin, "GET", tenants+"/"+a.tenant+"/members", "")
		check(a.admin, "PUT", tenants+"/"+a.tenant+"/members/"+mc.Member.User.ID, `{"role":"Contributor"}`)
		check(a.admin, "DELETE", tenants+"/"+a.tenant+"/members/"+mc.Member.User.ID, "")
		check(a.admin, "GET", tenants+"/"+a.tenant+"/audit-events", "")
		check(a.admin, "GET", tenants+"/"+a.tenant+"/error-reports?kind=app_crash&limit=5", "")
		check(a.admin, "GET", tenants+"/"+a.tenant+"/error-reports?kind=crash", "") // 400 problem
		check(a.admin, "GET", tenants+"/"+a.tenant+"/error-reports/export?format=json", "")
		check(a.admin, "GET", tenants+"/"+a.tenant+"/error-reports/export?format=csv", "")
		check(a.admin, "GET", tenants+"/"+a.tenant+"/image-health?window=24h", "")
		var tc struct {
			Token struct{ ID string } `json:"token"`
		}
		check(a.admin, "POST", "/api/v1/tokens", `{"name":"ci","expires_in":"24h"}`).decode(t, &tc)
		check(a.admin, "GET", "/api/v1/tokens", "")
		check(a.admin, "DELETE", "/api/v1/tokens/"+url.PathEscape(tc.Token.ID), "")
		check(a.admin.as("moat_bad"), "GET", "/api/v1/me", "") // 401 problem

		// The validator is not vacuous: a response the document does not describe fails it.
		req, _ := http.NewRequest("GET", w.srv.URL+"/api/v1/me", nil)
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Fatal(err)
		}
		bogus := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
			Status:                 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"user":{"id":1}}`)),
		}
		if err := openapi3filter.ValidateResponse(context.Background(), bogus); err == nil {
			t.Error("a malformed getMe response passed validation; the schema check is vacuous")
		}
	})
}
