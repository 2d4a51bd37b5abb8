package mgmt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/internal/updstate"
)

// reportWorld is a platform with tenant Contoso and two of its devices attested (so they
// hold certificates), and a second tenant, Fabrikam, with its own administrator.
type reportWorld struct {
	p         *testenv.Platform
	dev, dev2 testenv.Device
	device    *api // dev over mutual TLS
	device2   *api // dev2 over mutual TLS
	admin     *api // Contoso's Administrator
	reader    *api // Contoso's Reader
	fabrikam  *api // Fabrikam's Administrator
	fabTenant string
}

func newReportWorld(t *testing.T, opts ...testenv.ServerOption) *reportWorld {
	t.Helper()
	ctx := context.Background()
	p := testenv.NewPlatform(t, opts...)
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	w := &reportWorld{p: p}
	mtls := func(d testenv.Device) *api {
		cert, err := p.Attest(d, osImg.Measurement(), app.Measurement())
		if err != nil {
			t.Fatalf("Attest(%s) = %v", d.ID, err)
		}
		return &api{t: t, srv: p.Server, http: p.DeviceHTTPClient(cert)}
	}
	w.dev, w.dev2 = p.NewDevice(true, "DW100/Production"), p.NewDevice(true, "DW100/Production")
	w.device, w.device2 = mtls(w.dev), mtls(w.dev2)
	member := func(c *client.Client, tenant, name string, role client.Role) *api {
		m, err := c.CreateMember(ctx, tenant, client.MemberCreate{Name: name, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		return newAPI(t, p.Server, m.Secret)
	}
	w.admin = member(p.Admin, p.Tenant, "support-admin", client.RoleAdministrator)
	w.reader = member(p.Admin, p.Tenant, "support-reader", client.RoleReader)
	fab, err := p.Op.CreateTenant(ctx, client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	w.fabTenant = fab.ID
	w.fabrikam = member(p.Op, fab.ID, "fabrikam-admin", client.RoleAdministrator)
	return w
}

// onBothPlatforms runs fn on a platform on SQLite and one on PostgreSQL.
func onBothPlatforms(t *testing.T, fn func(t *testing.T, w *reportWorld)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, newReportWorld(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, newReportWorld(t, testenv.WithDatabase(testenv.FreshPostgresDatabase(t))))
	})
}

func (w *reportWorld) reportsPath(device string) string {
	return "/api/v1/tenants/" + w.p.Tenant + "/devices/" + device + "/error-reports"
}

const uploadPath = "/api/v1/device/error-reports"

// records lists a device's reports as Contoso's administrator, every page.
func (w *reportWorld) records(t *testing.T, device string) []errreport.Record {
	t.Helper()
	var all []errreport.Record
	token := ""
	for range 100 {
		var page struct {
			Items         []errreport.Record `json:"items"`
			NextPageToken string             `json:"next_page_token"`
		}
		w.admin.must(200, "GET", w.reportsPath(device)+"?limit=3&page_token="+token, nil).decode(t, &page)
		all = append(all, page.Items...)
		if token = page.NextPageToken; token == "" {
			return all
		}
	}
	t.Fatal("pagination does not end")
	return nil
}

func reportIDs(recs []errreport.Record) []string {
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.Report.ID)
	}
	return ids
}

var reportTime = time.Now().UTC().Truncate(time.Second)

// testReports returns n valid reports of every kind in turn, made a second apart.
func testReports(n int) []errreport.Report {
	out := make([]errreport.Report, n)
	for i := range out {
		at := reportTime.Add(time.Duration(i) * time.Second)
		r := errreport.Report{ID: errreport.NewID(at), Kind: errreport.Kinds[i%len(errreport.Kinds)], At: at, Message: fmt.Sprintf("failure %d", i)}
		switch r.Kind {
		case errreport.AppCrash:
			code := 2
			r.ImagePath, r.ImageVersion, r.ExitCode, r.UptimeSeconds, r.StderrTail = "apps/dw100-app/1.0.0", "1.0.0", &code, 7, "panic: heater\n"
		case errreport.UpdateFailed:
			r.Step, r.Target, r.Code = errreport.StepVerify, "apps/dw100-app/2.0.0", "signature_invalid"
		case errreport.CapabilityDenied:
			r.ImagePath, r.Capability = "apps/dw100-app/1.0.0", "gpio:5"
		case errreport.AttestationRefused:
			r.Code = "refused"
		case errreport.Agent:
			r.Code, r.Dropped = errreport.CodeQueueFull, 4
		}
		out[i] = r
	}
	return out
}

func upload(t *testing.T, device *api, reports []errreport.Report) []string {
	t.Helper()
	var acc errreport.Accepted
	device.must(200, "POST", uploadPath, errreport.Batch{Reports: reports}).decode(t, &acc)
	return acc.Accepted
}

// TestErrorReports_DeviceUploadsTenantLists is the whole path: a device uploads over mutual
// TLS, the tenant's staff list the reports, newest received first, page by page, with
// every field as the device sent it and the device the certificate names.
func TestErrorReports_DeviceUploadsTenantLists(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		first, second := testReports(5), testReports(10)[5:]
		if got, want := upload(t, w.device, first), reportIDs(records(w.dev.ID, first)); !slices.Equal(got, want) {
			t.Errorf("accepted = %v, want %v", got, want)
		}
		upload(t, w.device, second)
		got := w.records(t, w.dev.ID)
		var want []errreport.Record
		for _, batch := range [][]errreport.Report{first, second} {
			want = append(records(w.dev.ID, batch), want...)
		}
		slices.SortStableFunc(want[:5], func(a, b errreport.Record) int { return strings.Compare(b.Report.ID, a.Report.ID) })
		slices.SortStableFunc(want[5:], func(a, b errreport.Record) int { return strings.Compare(b.Report.ID, a.Report.ID) })
		if d := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".ReceivedAt" }, cmp.Ignore())); d != "" {
			t.Errorf("listed reports (-want +got):\n%s", d)
		}
		if !got[0].ReceivedAt.After(got[len(got)-1].ReceivedAt) || time.Since(got[0].ReceivedAt) > time.Minute {
			t.Errorf("received_at %s .. %s: want the server's times of the two uploads, newest first", got[0].ReceivedAt, got[len(got)-1].ReceivedAt)
		}
		// Through the client too, and a Reader may list.
		page, err := w.p.Admin.ListErrorReports(t.Context(), w.p.Tenant, w.dev.ID, client.ListOptions{Limit: 1})
		if err != nil || len(page.Items) != 1 || page.Items[0].Report.ID != got[0].Report.ID || page.NextPageToken == "" {
			t.Errorf("client ListErrorReports(limit 1) = %+v, %v; want the newest and a next page", page, err)
		}
		w.reader.must(200, "GET", w.reportsPath(w.dev.ID), nil)
		// The other device has none.
		if other := w.records(t, w.dev2.ID); len(other) != 0 {
			t.Errorf("dev2 has %d reports, want none", len(other))
		}
	})
}

func records(device string, rs []errreport.Report) []errreport.Record {
	out := make([]errreport.Record, len(rs))
	for i, r := range rs {
		out[i] = errreport.Record{DeviceID: identity.DeviceID(device), Report: r}
	}
	return out
}

// TestErrorReports_DuplicatesStoredOnce: a device that resends (its answer was lost, or it
// crashed between upload and delete) gets every ID acknowledged again and nothing is stored
// twice; the first copy stays.
func TestErrorReports_DuplicatesStoredOnce(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		rs := testReports(4)
		upload(t, w.device, rs)
		changed := slices.Clone(rs)
		changed[0].Message = "a later copy"
		extra := testReports(6)[5]
		again := upload(t, w.device, append(changed, rs[1], extra))
		want := append(reportIDs(records("", rs)), extra.ID)
		if !slices.Equal(again, want) {
			t.Errorf("accepted on resend = %v, want each ID once: %v", again, want)
		}
		got := w.records(t, w.dev.ID)
		if len(got) != 5 {
			t.Fatalf("stored %d reports, want 5 (4 resent, 1 new)", len(got))
		}
		for _, r := range got {
			if r.Report.ID == rs[0].ID && r.Report.Message != rs[0].Message {
				t.Errorf("report %s message = %q, want the first copy's %q", r.Report.ID, r.Report.Message, rs[0].Message)
			}
		}
	})
}

// TestErrorReports_DeviceReportsOnlyForItself: the device is the certificate's. A body
// cannot name another device, the same IDs from another device are that device's, and
// without a valid certificate nothing is stored.
func TestErrorReports_DeviceReportsOnlyForItself(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		rs := testReports(2)
		p := w.device.must(400, "POST", uploadPath, map[string]any{"device_id": w.dev2.ID, "reports": rs}).problem(t)
		if p.Code != "unknown_field" || p.Field != "device_id" {
			t.Errorf("batch naming another device: code %q field %q, want unknown_field device_id", p.Code, p.Field)
		}
		upload(t, w.device, rs)
		upload(t, w.device2, rs[:1]) // the same ID, from dev2: dev2's own report
		for _, x := range []struct {
			dev  string
			want int
		}{{w.dev.ID, 2}, {w.dev2.ID, 1}} {
			got := w.records(t, x.dev)
			if len(got) != x.want {
				t.Errorf("device %s has %d reports, want %d", x.dev, len(got), x.want)
			}
			for _, r := range got {
				if string(r.DeviceID) != x.dev {
					t.Errorf("report %s of device %s is stored for %s", r.Report.ID, x.dev, r.DeviceID)
				}
			}
		}
		// No certificate, a bearer token, a forged certificate: 401 and nothing stored.
		fresh := testReports(7)[6:]
		anon := &api{t: t, srv: w.p.Server, http: w.p.Server.HTTPClient(t)}
		anon.must(401, "POST", uploadPath, errreport.Batch{Reports: fresh})
		w.admin.must(401, "POST", uploadPath, errreport.Batch{Reports: fresh})
		forged := &api{t: t, srv: w.p.Server, http: w.p.DeviceHTTPClient(w.p.ForgedCertificate(w.dev2))}
		forged.must(401, "POST", uploadPath, errreport.Batch{Reports: fresh})
		if got := w.records(t, w.dev2.ID); len(got) != 1 {
			t.Errorf("device %s has %d reports after refused uploads, want 1", w.dev2.ID, len(got))
		}
	})
}

// TestErrorReports_OtherTenantGetsNotFound attacks rule 3: another tenant's administrator,
// with Contoso's tenant or its own in the path, finds no such device; so does anyone for an
// unknown or malformed device ID.
func TestErrorReports_OtherTenantGetsNotFound(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		upload(t, w.device, testReports(3))
		for _, path := range []string{
			w.reportsPath(w.dev.ID),
			"/api/v1/tenants/" + w.fabTenant + "/devices/" + w.dev.ID + "/error-reports",
		} {
			if p := w.fabrikam.must(404, "GET", path, nil).problem(t); p.Code != "tenant_not_found" && p.Code != "device_not_found" {
				t.Errorf("Fabrikam GET %s: code %q, want tenant_not_found or device_not_found", path, p.Code)
			}
		}
		for _, id := range []string{strings.Repeat("0", 64), "not-a-device", strings.ToUpper(w.dev.ID)} {
			w.admin.must(404, "GET", w.reportsPath(id), nil)
		}
		if got := w.records(t, w.dev.ID); len(got) != 3 {
			t.Errorf("Contoso's device has %d reports, want 3", len(got))
		}
	})
}

// TestErrorReports_BadBatchChangesNothing: an oversized, malformed or partly invalid batch
// is refused whole with a problem naming the report, and nothing of it is stored (rule 5).
func TestErrorReports_BadBatchChangesNothing(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		kept := testReports(1)
		upload(t, w.device, kept)
		good := testReports(3)[1:]
		bad := func(fn func(*errreport.Report)) []errreport.Report {
			rs := slices.Clone(good)
			rs = append(rs, testReports(4)[3])
			fn(&rs[len(rs)-1])
			return rs
		}
		huge := strings.Repeat("x", errreport.MaxBatchBytes)
		for _, tc := range []struct {
			name   string
			body   any
			status int
			code   string
			field  string
		}{
			{"101 reports", errreport.Batch{Reports: testReports(errreport.MaxBatch + 1)}, 400, "too_many_reports", "reports"},
			{"no reports", errreport.Batch{Reports: []errreport.Report{}}, 400, "reports_required", "reports"},
			{"unknown kind in the last", errreport.Batch{Reports: bad(func(r *errreport.Report) { r.Kind = "meltdown" })}, 400, "invalid_kind", "reports[2].kind"},
			{"terminal escape in the last", errreport.Batch{Reports: bad(func(r *errreport.Report) { r.Message = "\x1b[2J" })}, 400, "control_character", "reports[2].message"},
			{"stderr over 4 KiB", errreport.Batch{Reports: bad(func(r *errreport.Report) {
				r.Kind, r.Dropped, r.Code, r.ImagePath, r.Signal, r.StderrTail = errreport.AppCrash, 0, "", "apps/a/1", "SIGSEGV", strings.Repeat("y", 4097)
			})}, 400, "stderr_tail_too_long", "reports[2].stderr_tail"},
			{"bad ID", errreport.Batch{Reports: bad(func(r *errreport.Report) { r.ID = "1" })}, 400, "invalid_report_id", "reports[2].id"},
			{"malformed JSON", `{"reports":[{"id":`, 400, "malformed_json", ""},
			{"wrong type", `{"reports":{}}`, 400, "wrong_type", "reports"},
			{"body over the limit", `{"reports":[{"message":"` + huge + `"}]}`, 413, "body_too_large", ""},
		} {
			r := w.device.do("POST", uploadPath, tc.body)
			if r.Status != tc.status {
				t.Errorf("%s: status %d %.300s, want %d", tc.name, r.Status, r.Body, tc.status)
				continue
			}
			p := r.problem(t)
			if p.Code != tc.code || p.Field != tc.field {
				t.Errorf("%s: code %q field %q, want %q %q", tc.name, p.Code, p.Field, tc.code, tc.field)
			}
		}
		// A wrong media type is refused before the body is read.
		r := w.device.do("POST", uploadPath, nil, "Content-Type", "text/plain")
		if r.Status != http.StatusUnsupportedMediaType {
			t.Errorf("text/plain: status %d, want 415", r.Status)
		}
		got := w.records(t, w.dev.ID)
		if ids := reportIDs(got); !slices.Equal(ids, reportIDs(records("", kept))) {
			t.Errorf("after refused batches the device has %v, want only %v", ids, reportIDs(records("", kept)))
		}
	})
}

// TestErrorReports_LargestBatchIsAccepted: a batch of MaxBatch reports of the largest valid
// size fits the route's body limit.
func TestErrorReports_LargestBatchIsAccepted(t *testing.T) {
	t.Parallel()
	w := newReportWorld(t)
	rs := testReports(errreport.MaxBatch)
	for i := range rs {
		code := 139
		rs[i] = errreport.Report{ID: rs[i].ID, Kind: errreport.AppCrash, At: rs[i].At, ImagePath: "apps/" + strings.Repeat("<", 120) + "/1",
			ExitCode: &code, Message: strings.Repeat("<", errreport.MaxMessageBytes), StderrTail: strings.Repeat(">", errreport.MaxStderrTailBytes)}
	}
	body, err := json.Marshal(errreport.Batch{Reports: rs})
	if err != nil {
		t.Fatal(err)
	}
	if len(body) <= 2*mgmt.MaxBodyBytes {
		t.Fatalf("largest batch is only %d bytes; the test wants one far over the default body limit", len(body))
	}
	if got := upload(t, w.device, rs); len(got) != errreport.MaxBatch {
		t.Errorf("accepted %d reports, want %d", len(got), errreport.MaxBatch)
	}
}

// TestErrorReports_MatchOpenAPI validates the uploads and lists of error reports and update
// states, and the device record, requests and responses,
// against the served OpenAPI document (kin-openapi).
func TestErrorReports_MatchOpenAPI(t *testing.T) {
	t.Parallel()
	w := newReportWorld(t)
	r := w.admin.as("").must(200, "GET", "/api/v1/openapi.json", nil)
	doc, err := openapi3.NewLoader().LoadFromData(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(t.Context()); err != nil {
		t.Fatalf("OpenAPI document is invalid: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: w.p.Server.URL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	check := func(caller *api, method, path string, body []byte) {
		t.Helper()
		var rb any
		if body != nil {
			rb = body
		}
		r := caller.do(method, path, rb)
		req, err := http.NewRequestWithContext(t.Context(), method, w.p.Server.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Fatalf("%s %s: not in the OpenAPI document: %v", method, path, err)
		}
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		if r.Status < 400 {
			if err := openapi3filter.ValidateRequest(t.Context(), in); err != nil {
				t.Errorf("%s %s: request does not match the document: %v", method, path, err)
			}
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: r.Status, Header: r.Header,
			Body: io.NopCloser(bytes.NewReader(r.Body)), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
		if err := openapi3filter.ValidateResponse(t.Context(), out); err != nil {
			t.Errorf("%s %s = %d: response does not match the document: %v", method, path, r.Status, err)
		}
	}
	body, err := json.Marshal(errreport.Batch{Reports: testReports(10)})
	if err != nil {
		t.Fatal(err)
	}
	check(w.device, "POST", uploadPath, body)
	check(w.device, "POST", uploadPath, []byte(`{"reports":[{"id":"x"}]}`)) // 400 problem
	check(w.admin, "GET", w.reportsPath(w.dev.ID)+"?limit=4", nil)
	check(w.admin, "GET", w.reportsPath(strings.Repeat("0", 64)), nil) // 404 problem
	// Update states, and the device record that carries the latest one and last seen.
	body, err = json.Marshal(updstate.Batch{Reports: testStates()})
	if err != nil {
		t.Fatal(err)
	}
	check(w.device, "POST", statesUploadPath, body)
	check(w.device, "POST", statesUploadPath, []byte(`{"reports":[{"id":"x"}]}`)) // 400 problem
	check(w.admin, "GET", w.statesPath(w.dev.ID)+"?limit=2", nil)
	check(w.admin, "GET", "/api/v1/tenants/"+w.p.Tenant+"/devices/"+w.dev.ID, nil)
	// Error issues.
	var issues struct{ Items []errreport.Issue }
	w.admin.must(200, "GET", w.issuesPath(), nil).decode(t, &issues)
	check(w.admin, "GET", w.issuesPath()+"?limit=2&sort=reports&kind=app_crash&product=DW100&since=2020-01-01T00:00:00Z", nil)
	check(w.admin, "GET", w.issuesPath()+"/"+issues.Items[0].ID, nil)
	check(w.admin, "GET", w.issuesPath()+"/"+issues.Items[0].ID+"/reports?limit=1", nil)
	check(w.admin, "GET", w.issuesPath()+"/iss_00000000000000000000", nil) // 404 problem
}
