package cloud_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv/cloudenv"
)

// TestOpenAPI_ResponsesMatchSchema loads the cloud API's served OpenAPI document with
// kin-openapi (an implementation independent of the generator), checks it is valid, and
// validates real requests and responses of every route against it, problems included.
func TestOpenAPI_ResponsesMatchSchema(t *testing.T) {
	t.Parallel()
	e := cloudenv.NewCloud(t)
	e.Start(t, e.Config())
	d := e.Device(t)
	at := time.Now().Add(-time.Minute)
	if err := e.Publish(t, d, "devices/"+d.ID+"/telemetry", cloudenv.Reading(at, "c1", "drying", 64.5)); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish(t, d, "devices/"+d.ID+"/events", `{"v":1,"time":"`+at.UTC().Format(time.RFC3339)+`","name":"cycle_end","cycle":"c1","readings":{"water_used":{"value":9.5,"unit":"L"}}}`); err != nil {
		t.Fatal(err)
	}
	cloudenv.Eventually(t, "stored", func() (bool, error) {
		n, err := cloudenv.TelemetryCount(t.Context(), e.Admin, d.ID)
		return n == 1, err
	})
	token := e.AdminToken(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	get := func(path string) []byte {
		resp, err := hc.Get(e.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	doc, err := openapi3.NewLoader().LoadFromData(get("/api/v1/openapi.json"))
	if err != nil {
		t.Fatalf("load OpenAPI document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("OpenAPI document is invalid: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: e.URL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	check := func(method, path, body, tok string, want int) []byte {
		t.Helper()
		do := func() (*http.Request, *http.Response, []byte) {
			req, err := http.NewRequest(method, e.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			req, _ = http.NewRequest(method, e.URL+path, strings.NewReader(body))
			req.Header = resp.Request.Header
			return req, resp, b
		}
		req, resp, b := do()
		if resp.StatusCode != want {
			t.Errorf("%s %s = %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Fatalf("%s %s: not in the OpenAPI document: %v", method, path, err)
		}
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		if resp.StatusCode < 400 {
			if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
				t.Errorf("%s %s: request does not match the document: %v", method, path, err)
			}
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
			Body: io.NopCloser(bytes.NewReader(b)), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			t.Errorf("%s %s = %d: response does not match the document: %v", method, path, resp.StatusCode, err)
		}
		return b
	}
	dev := "/api/v1/devices/" + d.ID
	check("GET", "/api/v1/devices", "", token, 200)
	check("GET", "/api/v1/devices?limit=0", "", token, 400)
	check("GET", "/api/v1/devices", "", "", 401)
	check("GET", dev+"/telemetry?since="+at.Add(-time.Hour).UTC().Format(time.RFC3339)+"&metric=drying_temp", "", token, 200)
	check("GET", dev+"/telemetry?since=yesterday", "", token, 400)
	check("GET", dev+"/summaries?per=cycle", "", token, 200)
	check("GET", dev+"/summaries?per=hour", "", token, 200)
	check("GET", dev+"/events", "", token, 200)
	check("POST", dev+"/diagnostics", `{"command":"heater-self-test","timeout":"1h"}`, token, 202)
	check("POST", dev+"/diagnostics", `{"command":"rm -rf /"}`, token, 400)
	check("POST", "/api/v1/devices/"+strings.Repeat("0", 64)+"/diagnostics", `{"command":"heater-self-test"}`, token, 404)
	check("GET", "/api/v1/diagnostics?device="+d.ID, "", token, 200)
	check("GET", "/api/v1/alerts?state=open", "", token, 200)
	check("GET", "/api/v1/alerts/99", "", token, 404)
	ds, err := e.Admin.ListDiagnostics(t.Context(), d.ID, client.ListOptions{})
	if err != nil || len(ds.Items) != 1 {
		t.Fatalf("diagnostics: %v, %v", ds, err)
	}
	check("GET", "/api/v1/diagnostics/"+ds.Items[0].ID, "", token, 200)
	check("GET", "/api/v1/diagnostics/dgn_nosuchrequest", "", token, 404)
	// The owners' staff routes (issue 14).
	check("POST", "/api/v1/claim-codes", `{"product":"DW100","devices":["`+d.ID+`"]}`, token, 201)
	check("POST", "/api/v1/claim-codes", `{"product":"DW100","devices":["nothex"]}`, token, 400)
	check("POST", "/api/v1/sales", `{"device":"`+d.ID+`","product":"DW100","sold_at":"2026-05-01","shop":"shop-1"}`, token, 201)
	check("POST", "/api/v1/sales", `{"device":"`+d.ID+`","product":"DW100","sold_at":"yesterday","shop":"shop-1"}`, token, 400)
	check("GET", "/api/v1/service-requests?state=open&device="+d.ID, "", token, 200)
	check("GET", "/api/v1/service-requests?state=burning", "", token, 400)
	check("PATCH", "/api/v1/service-requests/99", `{"state":"done","note":"fixed"}`, token, 404)
	check("PATCH", "/api/v1/service-requests/99", `{"state":"melted"}`, token, 400)
	check("GET", "/api/v1/reservations?device="+d.ID, "", token, 200)
	check("GET", "/api/v1/reservations?state=stolen", "", token, 400)
}
