package mgmt_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/errreport"
)

func TestAPI_CreateProductMakesDefaultGroups(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		var gs struct {
			Items []object `json:"items"`
		}
		w.a.admin.must(200, "GET", w.a.productPath()+"/device-groups", nil).decode(t, &gs)
		var got []string
		for _, g := range gs.Items {
			got = append(got, g.Name+"|"+g.OSFeed+"|"+g.Policy)
		}
		want := []string{
			"Development|Retail|UpdateOSOnly",
			"Field Test|Retail|UpdateAll",
			"Production|Retail|UpdateAll",
			"Field Test OS Evaluation|RetailEval|UpdateAll",
			"Production OS Evaluation|RetailEval|UpdateAll",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("default groups (-want +got):\n%s", diff)
		}
	})
}

func TestAPI_RoleRules(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		a := w.a
		products := "/api/v1/tenants/" + a.tenant + "/products"

		// Reader: reads, never writes.
		w.readerA.must(200, "GET", products, nil)
		w.readerA.must(200, "GET", a.productPath(), nil)
		p := w.readerA.must(403, "POST", products, map[string]string{"name": "X1"}).problem(t)
		if p.Code != "role_required" {
			t.Errorf("Reader POST product: code = %q, want role_required", p.Code)
		}
		w.readerA.must(403, "PATCH", a.productPath(), map[string]string{"name": "renamed"}, "If-Match", `"1"`)
		w.readerA.must(403, "DELETE", a.groupPath(), nil)
		w.readerA.must(403, "GET", "/api/v1/tenants/"+a.tenant+"/audit-events", nil)

		// Contributor: products and groups, not members or the audit log.
		w.contribA.must(201, "POST", products, map[string]string{"name": "X2"})
		w.contribA.must(403, "POST", "/api/v1/tenants/"+a.tenant+"/members", map[string]string{"name": "eve", "role": "Administrator"})
		w.contribA.must(403, "GET", "/api/v1/tenants/"+a.tenant+"/members", nil)

		// Only platform operators create tenants.
		w.a.admin.must(403, "POST", "/api/v1/tenants", map[string]string{"name": "Evil"})

		// Nothing was written by the refused calls.
		var l list
		a.admin.must(200, "GET", products, nil).decode(t, &l)
		if len(l.Items) != 2 {
			t.Errorf("products after refused writes = %d, want 2 (DW100, X2)", len(l.Items))
		}
	})
}

func TestAPI_RevokedTokenIsRefused(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		var created struct {
			Token  object `json:"token"`
			Secret string `json:"secret"`
		}
		w.a.admin.must(201, "POST", "/api/v1/tokens", map[string]string{"name": "ci", "expires_in": "720h"}).decode(t, &created)
		ci := w.a.admin.as(created.Secret)
		ci.must(200, "GET", "/api/v1/me", nil)
		// Another user cannot revoke it (it is not theirs): 404.
		w.b.admin.must(404, "DELETE", "/api/v1/tokens/"+created.Token.ID, nil)
		ci.must(200, "GET", "/api/v1/me", nil)

		w.a.admin.must(200, "DELETE", "/api/v1/tokens/"+created.Token.ID, nil)
		r := ci.must(401, "GET", "/api/v1/me", nil)
		if p := r.problem(t); p.Code != "unauthenticated" {
			t.Errorf("revoked token: code = %q, want unauthenticated", p.Code)
		}
		if r.Header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
		ci.must(401, "GET", "/api/v1/tenants/"+w.a.tenant+"/products", nil)

		// Tampered and malformed tokens are refused alike.
		for _, tok := range []string{
			"", "garbage", created.Secret[:len(created.Secret)-1] + "A", "moat_tok_00.x",
			strings.Replace(w.a.admin.token, ".", ".A", 1),
		} {
			w.a.admin.as(tok).must(401, "GET", "/api/v1/me", nil)
		}
		// The secret never appears in the logs.
		if strings.Contains(w.srv.Logs.String(), created.Secret[strings.Index(created.Secret, ".")+1:]) {
			t.Error("server logs contain a token secret")
		}
	})
}

func TestAPI_IfMatchPreventsLostUpdate(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		path := w.a.productPath()
		r := w.a.admin.must(200, "GET", path, nil)
		tag := r.Header.Get("ETag")
		if tag != `"1"` {
			t.Fatalf("ETag = %q, want \"1\"", tag)
		}
		// No If-Match: 428.
		if p := w.a.admin.must(428, "PATCH", path, map[string]string{"description": "x"}).problem(t); p.Code != "if_match_required" {
			t.Errorf("code = %q, want if_match_required", p.Code)
		}
		// Alice and Bob both read version 1; Alice writes first.
		alice := w.a.admin.must(200, "PATCH", path, map[string]string{"description": "alice"}, "If-Match", tag)
		if got := alice.Header.Get("ETag"); got != `"2"` {
			t.Errorf("ETag after update = %q, want \"2\"", got)
		}
		p := w.contribA.must(412, "PATCH", path, map[string]string{"description": "bob"}, "If-Match", tag).problem(t)
		if p.Code != "etag_mismatch" {
			t.Errorf("stale write: code = %q, want etag_mismatch", p.Code)
		}
		// A weak tag never matches.
		w.contribA.must(412, "PATCH", path, map[string]string{"description": "bob"}, "If-Match", `W/"2"`)
		var cur struct {
			Description string `json:"description"`
		}
		w.a.admin.must(200, "GET", path, nil).decode(t, &cur)
		if cur.Description != "alice" {
			t.Errorf("description = %q, want alice (Bob's stale write must not land)", cur.Description)
		}
		// A stale DELETE is refused too.
		w.a.admin.must(412, "DELETE", path, nil, "If-Match", `"1"`)

		// Concurrent writers with the same version: exactly one wins.
		var wg sync.WaitGroup
		codes := make(chan int, 8)
		for i := range 8 {
			wg.Go(func() {
				codes <- w.a.admin.do("PATCH", path, map[string]string{"description": fmt.Sprint("w", i)}, "If-Match", `"2"`).Status
			})
		}
		wg.Wait()
		close(codes)
		count := map[int]int{}
		for c := range codes {
			count[c]++
		}
		if count[200] != 1 || count[412] != 7 {
			t.Errorf("concurrent PATCH at one version: statuses %v, want one 200 and seven 412", count)
		}
	})
}

func TestAPI_AuditLogRecordsChanges(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		w.contribA.must(200, "PATCH", w.a.groupPath(), map[string]string{"update_policy": "UpdateAll"}, "If-Match", `"1"`)
		var l struct {
			Items []struct {
				Action     string `json:"action"`
				ActorName  string `json:"actor_name"`
				ObjectID   string `json:"object_id"`
				RemoteAddr string `json:"remote_addr"`
				TenantID   string `json:"tenant_id"`
			} `json:"items"`
		}
		w.a.admin.must(200, "GET", "/api/v1/tenants/"+w.a.tenant+"/audit-events", nil).decode(t, &l)
		var actions []string
		for _, e := range l.Items {
			actions = append(actions, e.Action)
			if e.TenantID != w.a.tenant {
				t.Errorf("audit event of tenant %s in %s's log", e.TenantID, w.a.tenant)
			}
			if !strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") {
				t.Errorf("audit %s: remote_addr = %q, want 127.0.0.1:port", e.Action, e.RemoteAddr)
			}
		}
		want := []string{"tenant.create", "member.put", "member.create", "product.create", "signing_key.create", "device.claim", "member.create", "member.create", "device_group.update"}
		if diff := cmp.Diff(want, actions); diff != "" {
			t.Errorf("audit actions (-want +got):\n%s", diff)
		}
		last := l.Items[len(l.Items)-1]
		if last.ActorName != "contributor" || last.ObjectID != w.a.group.ID {
			t.Errorf("last event = %+v, want actor contributor on %s", last, w.a.group.ID)
		}
	})
}

func TestAPI_Pagination(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		base := "/api/v1/tenants/" + w.a.tenant + "/products"
		for i := range 6 {
			w.a.admin.must(201, "POST", base, map[string]string{"name": fmt.Sprintf("P%02d", i)})
		}
		var names []string
		page := ""
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
			var l list
			w.a.admin.must(200, "GET", base+"?limit=3&page_token="+page, nil).decode(t, &l)
			for _, p := range l.Items {
				names = append(names, p.Name)
			}
			if l.NextPageToken == "" {
				break
			}
			page = l.NextPageToken
		}
		want := []string{"DW100", "P00", "P01", "P02", "P03", "P04", "P05"}
		if diff := cmp.Diff(want, names); diff != "" {
			t.Errorf("paged names (-want +got):\n%s", diff)
		}
		for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?page_token=%%%"} {
			p := w.a.admin.must(400, "GET", base+q, nil).problem(t)
			if p.Field == "" {
				t.Errorf("GET %s: problem names no field", q)
			}
		}
		var l list
		w.a.admin.must(200, "GET", base+"?name=dw100", nil).decode(t, &l)
		if len(l.Items) != 1 || l.Items[0].ID != w.a.product.ID {
			t.Errorf("?name=dw100 = %+v, want DW100 (case-insensitive)", l.Items)
		}
	})
}

func TestAPI_LastAdministratorStays(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		var l struct {
			Items []struct {
				User struct{ ID string } `json:"user"`
				Role string              `json:"role"`
			} `json:"items"`
		}
		// Remove the operator (the creator) so the tenant admin is the last Administrator.
		w.a.admin.must(200, "GET", "/api/v1/tenants/"+w.a.tenant+"/members", nil).decode(t, &l)
		var me struct {
			User struct{ ID string } `json:"user"`
		}
		w.op.must(200, "GET", "/api/v1/me", nil).decode(t, &me)
		w.a.admin.must(204, "DELETE", "/api/v1/tenants/"+w.a.tenant+"/members/"+me.User.ID, nil)
		p := w.a.admin.must(409, "DELETE", "/api/v1/tenants/"+w.a.tenant+"/members/"+w.a.userID, nil).problem(t)
		if p.Code != "last_administrator" {
			t.Errorf("code = %q, want last_administrator", p.Code)
		}
		w.a.admin.must(409, "PUT", "/api/v1/tenants/"+w.a.tenant+"/members/"+w.a.userID, map[string]string{"role": "Reader"})
		// The operator, no longer a member, now sees nothing of the tenant.
		w.op.must(404, "GET", "/api/v1/tenants/"+w.a.tenant+"/products", nil)
	})
}

func TestAPI_UnknownRouteIsProblem(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		r := w.a.admin.must(404, "GET", "/api/v1/nope", nil)
		r.problem(t)
		r = w.a.admin.must(http.StatusMethodNotAllowed, "PUT", "/api/v1/tenants", nil)
		if p := r.problem(t); p.Code != "method_not_allowed" || r.Header.Get("Allow") != "GET, POST, HEAD" {
			t.Errorf("PUT /api/v1/tenants: code %q, Allow %q; want method_not_allowed and GET, POST, HEAD", p.Code, r.Header.Get("Allow"))
		}
	})
}

// pathFixtures fills every path parameter of the route table, by name, for a tenant: the
// value names that tenant's own object. A parameter that names no object of a tenant (a TUF
// file name is read in the tenant of the path) is marked shared: only the attack through the
// tenant applies to it. A route with a parameter missing here fails
// TestAPI_CrossTenantIsNotFound: a new route (a future {rollout}) adds its fixture here.
var pathFixtures = map[string]struct {
	of     func(fixture) string
	shared bool
}{
	"tenant":     {of: func(f fixture) string { return f.tenant }},
	"product":    {of: func(f fixture) string { return f.product.ID }},
	"group":      {of: func(f fixture) string { return f.group.ID }},
	"user":       {of: func(f fixture) string { return f.userID }},
	"key":        {of: func(f fixture) string { return f.keyID }},
	"device":     {of: func(f fixture) string { return f.deviceID }},
	"ca":         {of: func(f fixture) string { return f.caID }},
	"token":      {of: func(f fixture) string { return f.tokenID }},
	"target":     {of: func(f fixture) string { return f.target }},
	"file":       {of: func(fixture) string { return "timestamp.json" }, shared: true},
	"deployment": {of: func(f fixture) string { return f.deployments[0] }},
	// An issue ID that is the tenant's alone; errorissues_test.go attacks issues that
	// devices of one tenant reported through the other tenant.
	"issue": {of: func(f fixture) string { return errreport.IssueID("tenant=" + f.tenant) }},
}

var pathParamRE = regexp.MustCompile(`\{([a-z_]+)(?:\.\.\.)?\}`)

// crossTenantAttack is one request of the walk: the route with each path parameter filled
// from A's or B's fixture.
type crossTenantAttack struct {
	name string
	from map[string]fixture // parameter -> whose object fills it
}

// crossTenantAttacks lists the attacks on a route's parameters: B's tenant in the path (with
// B's objects), and A's tenant with B's object in each object parameter separately and in
// all of them at once. ok is false when a parameter has no fixture.
func crossTenantAttacks(t *testing.T, pattern string, a, b fixture) (attacks []crossTenantAttack, ok bool) {
	var params, objects []string
	ok = true
	for _, m := range pathParamRE.FindAllStringSubmatch(pattern, -1) {
		fx, found := pathFixtures[m[1]]
		if !found {
			t.Errorf("route %s: no fixture for path parameter {%s}; add one to pathFixtures", pattern, m[1])
			ok = false
			continue
		}
		params = append(params, m[1])
		if m[1] != "tenant" && !fx.shared {
			objects = append(objects, m[1])
		}
	}
	with := func(name string, b fixture, which ...string) crossTenantAttack {
		at := crossTenantAttack{name: name, from: map[string]fixture{}}
		for _, p := range params {
			at.from[p] = a
		}
		for _, p := range which {
			at.from[p] = b
		}
		return at
	}
	if slices.Contains(params, "tenant") {
		attacks = append(attacks, with("B's tenant", b, params...))
	}
	for _, p := range objects {
		attacks = append(attacks, with("A's tenant with B's "+p, b, p))
	}
	if len(objects) > 1 {
		attacks = append(attacks, with("A's tenant with all of B's objects", b, objects...))
	}
	return attacks, ok
}

func (at crossTenantAttack) path(pattern string) string {
	return pathParamRE.ReplaceAllStringFunc(pattern, func(m string) string {
		p := strings.TrimSuffix(m[1:len(m)-1], "...")
		return pathFixtures[p].of(at.from[p])
	})
}

// TestAPI_CrossTenantIsNotFound walks every route of the table and every path parameter
// (ATTACKS row 30): with tenant A's administrator token, B's tenant in the path, and A's
// tenant with B's object in each parameter separately and all at once. Every tenant and
// user route answers 404 problem+json (never 403), and B is unchanged. Operator routes
// answer A exactly as they answer it for A's own objects (403: no existence oracle), and
// device routes refuse a management token (401). A route with a parameter that has no
// fixture in pathFixtures fails the test. Enforces rule 3.
func TestAPI_CrossTenantIsNotFound(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		// An uploaded package of each tenant, by the name a TUF client asks for.
		for i, f := range []*fixture{&w.a, &w.b} {
			// Different bytes: the same package uploaded by both would be one blob.
			pkg := packApp(t, "dw100-app", fmt.Sprintf("1.0.%d", i), "DW100")
			var bi struct{ Digest string }
			f.admin.must(201, "POST", "/api/v1/tenants/"+f.tenant+"/blobs", pkg, "Content-Type", "application/octet-stream").decode(t, &bi)
			f.target = "apps/dw100-app/" + strings.TrimPrefix(bi.Digest, "sha256:") + fmt.Sprintf(".1.0.%d", i)
		}
		bDump := dumpTenant(t, w.b)
		covered := 0
		for _, rt := range mgmt.Routes() {
			attacks, ok := crossTenantAttacks(t, rt.Pattern, w.a, w.b)
			if !ok || len(attacks) == 0 {
				continue
			}
			var body any
			if rt.Request != nil {
				body = validBody(t, rt.OperationID)
			}
			var hdr []string // a write names the version it read, as a real client would
			if rt.Method != http.MethodGet {
				hdr = []string{"If-Match", `"1"`}
			}
			var own resp // the answer to A for its own objects, for operator routes
			if rt.Auth == mgmt.AuthOperator {
				own = w.a.admin.do(rt.Method, crossTenantAttack{from: attacks[0].fromAll(w.a)}.path(rt.Pattern), body, hdr...)
				if own.Status != http.StatusForbidden {
					t.Errorf("%s %s as A's administrator on A's own objects = %d, want 403", rt.Method, rt.Pattern, own.Status)
				}
			}
			for _, at := range attacks {
				path := at.path(rt.Pattern)
				r := w.a.admin.do(rt.Method, path, body, hdr...)
				covered++
				switch rt.Auth {
				case mgmt.AuthTenant, mgmt.AuthAny:
					if r.Status != http.StatusNotFound {
						t.Errorf("%s: %s %s = %d %s, want 404", at.name, rt.Method, path, r.Status, r.Body)
						continue
					}
					r.problem(t)
				case mgmt.AuthOperator:
					if r.Status != own.Status || r.problem(t).Code != own.problem(t).Code {
						t.Errorf("%s: %s %s = %d %s, want what A gets for its own objects: %d %s", at.name, rt.Method, path, r.Status, r.Body, own.Status, own.Body)
					}
				case mgmt.AuthDevice, mgmt.AuthDeviceProof:
					if r.Status != http.StatusUnauthorized {
						t.Errorf("%s: %s %s with a management token = %d %s, want 401", at.name, rt.Method, path, r.Status, r.Body)
					}
				default:
					t.Errorf("%s %s: no cross-tenant expectation for its authorization rule", rt.Method, rt.Pattern)
				}
			}
		}
		if covered < 60 {
			t.Errorf("covered %d route attacks, want every parameter of every route", covered)
		}
		if diff := cmp.Diff(bDump, dumpTenant(t, w.b)); diff != "" {
			t.Errorf("tenant B changed by A's requests (-before +after):\n%s", diff)
		}
		// Listing: A sees only its own tenant and objects.
		var tl list
		w.a.admin.must(200, "GET", "/api/v1/tenants", nil).decode(t, &tl)
		if len(tl.Items) != 1 || tl.Items[0].ID != w.a.tenant {
			t.Errorf("A lists tenants %+v, want only its own", tl.Items)
		}
		w.a.admin.must(200, "GET", "/api/v1/tenants?name=Fabrikam", nil).decode(t, &tl)
		if len(tl.Items) != 0 {
			t.Errorf("A finds tenant Fabrikam by name: %+v", tl.Items)
		}
	})
}

// fromAll is the attack's parameters all filled from f.
func (at crossTenantAttack) fromAll(f fixture) map[string]fixture {
	m := map[string]fixture{}
	for p := range at.from {
		m[p] = f
	}
	return m
}

// validBody returns a request body that would be accepted, so a 404 comes from the
// tenant check and not from validation.
func validBody(t *testing.T, op string) any {
	switch op {
	case "createMember":
		return map[string]string{"name": "mallory", "role": "Administrator"}
	case "putMember":
		return map[string]string{"role": "Administrator"}
	case "createProduct":
		return map[string]string{"name": "Injected"}
	case "updateProduct":
		return map[string]string{"name": "Pwned"}
	case "createDeviceGroup":
		return map[string]string{"name": "Injected", "os_feed": "Retail", "update_policy": "UpdateAll"}
	case "updateDeviceGroup":
		return map[string]string{"name": "Pwned"}
	case "createSigningKey":
		return map[string]string{"name": "injected", "public_key_pem": newPublicKeyPEM(t)}
	case "putTenantStorageQuota":
		return map[string]any{"storage_quota_bytes": 1}
	case "claimDevices":
		return map[string]any{"device_ids": []string{strings.Repeat("0", 64)}}
	case "updateDevice":
		return map[string]any{"device_group": "DW100/Production", "blocked": true}
	case "createDeployment":
		return map[string]string{"target": "apps/dw100-app/1.0.0"}
	case "rollbackDeployment":
		return map[string]string{}
	case "pauseDeployment", "resumeDeployment", "abortDeployment", "promoteDeployment":
		return map[string]any{"reason": "cross-tenant", "force": true}
	}
	t.Fatalf("no valid body for operation %s; add one to validBody", op)
	return nil
}

// dumpTenant reads everything of a tenant that its admin can see.
func dumpTenant(t *testing.T, f fixture) string {
	t.Helper()
	var b strings.Builder
	for _, p := range []string{
		"/api/v1/tenants/" + f.tenant,
		"/api/v1/tenants/" + f.tenant + "/products",
		f.productPath() + "/device-groups",
		"/api/v1/tenants/" + f.tenant + "/members",
		"/api/v1/tenants/" + f.tenant + "/audit-events",
		"/api/v1/tenants/" + f.tenant + "/signing-keys",
		"/api/v1/tenants/" + f.tenant + "/devices",
		"/api/v1/tenants/" + f.tenant + "/device-cas",
		"/api/v1/tenants/" + f.tenant + "/devices/" + f.deviceID + "/certificates",
		"/api/v1/tenants/" + f.tenant + "/devices/" + f.deviceID + "/error-reports",
		"/api/v1/tenants/" + f.tenant + "/devices/" + f.deviceID + "/update-states",
		f.groupPath() + "/deployments",
	} {
		r := f.admin.must(200, "GET", p, nil)
		var v any
		if err := json.Unmarshal(r.Body, &v); err != nil {
			t.Fatal(err)
		}
		out, _ := json.MarshalIndent(v, "", " ")
		b.Write(out)
	}
	return b.String()
}
