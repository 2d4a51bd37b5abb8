package console

import (
	"errors"
	"net/http"
	"net/url"

	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/tenant"
)

// Adding a page: a route below (a handler wrapped in inTenant for a tenant's page), a
// template in templates/ that defines "content", and, for a top-level page, an entry in
// navigation. The handler reads and changes data only through q.api, the management API
// as the session's user.
func (c *Console) routes() []route {
	return []route{
		{"GET /ui/sign-in", authNone, signInPage},
		{"POST /ui/sign-in", authNone, signIn},
		{"GET /ui/sign-in/link", authNone, signInLink},
		{"POST /ui/sign-out", authSession, signOut},
		{"GET /ui/{$}", authSession, home},

		{"GET /ui/t/{tenant}/{$}", authSession, inTenant(overview)},
		{"GET /ui/t/{tenant}/devices", authSession, inTenant(devices)},
		{"GET /ui/t/{tenant}/devices/{device}", authSession, inTenant(devicePage)},
		{"POST /ui/t/{tenant}/devices/{device}/blocked", authSession, inTenant(setBlocked)},
		{"POST /ui/t/{tenant}/devices/{device}/group", authSession, inTenant(moveDevice)},
		{"GET /ui/t/{tenant}/devices/{device}/error-reports", authSession, inTenant(deviceErrorReports)},
		{"GET /ui/t/{tenant}/deployments", authSession, inTenant(deployments)},
		{"GET /ui/t/{tenant}/products/{product}/groups/{group}", authSession, inTenant(groupPage)},
		{"POST /ui/t/{tenant}/products/{product}/groups/{group}/deploy", authSession, inTenant(confirmDeploy)},
		{"POST /ui/t/{tenant}/products/{product}/groups/{group}/deployments", authSession, inTenant(deploy)},
		{"GET /ui/t/{tenant}/issues", authSession, inTenant(issues)},
		{"GET /ui/t/{tenant}/issues/{issue}", authSession, inTenant(issuePage)},
		{"GET /ui/t/{tenant}/error-reports", authSession, inTenant(errorReports)},
		{"GET /ui/t/{tenant}/error-reports/download", authSession, inTenant(downloadReports)},
		{"GET /ui/t/{tenant}/health", authSession, inTenant(health)},
		{"GET /ui/t/{tenant}/audit", authSession, inTenant(auditLog)},
	}
}

// navigation is the tenant pages' menu: label and the first path segment under the tenant.
var navigation = []struct{ label, segment string }{
	{"Fleet", ""},
	{"Devices", "devices"},
	{"Deployments", "deployments"},
	{"Errors", "issues"},
	{"Version health", "health"},
	{"Audit log", "audit"},
}

// navOf maps a path segment to the nav entry it belongs to.
var navOf = map[string]string{"products": "deployments", "error-reports": "issues"}

func (q *req) nav() []navLink {
	base := q.base()
	rest := strings.TrimPrefix(q.r.URL.Path, base)
	seg, _, _ := strings.Cut(rest, "/")
	if s, ok := navOf[seg]; ok {
		seg = s
	}
	out := make([]navLink, len(navigation))
	for i, n := range navigation {
		out[i] = navLink{Label: n.label, Href: base + n.segment, Active: seg == n.segment}
	}
	return out
}

// base is the tenant's console path, ending in "/".
func (q *req) base() string { return "/ui/t/" + url.PathEscape(q.tenant.ID) + "/" }

func tenantID(s string) tenant.ID { return tenant.ID(s) }

// inTenant reads the path's tenant through the API before fn runs: a tenant the user has
// no role in is the API's 404, like one that does not exist (rule 3).
func inTenant(fn func(*req) error) func(*req) error {
	return func(q *req) error {
		t, err := q.api.GetTenant(q.ctx, q.r.PathValue("tenant"))
		if err != nil {
			return err
		}
		q.tenant = &t
		return fn(q)
	}
}

func home(q *req) error {
	ts, err := q.api.ListTenants(q.ctx, client.ListOptions{Limit: 100})
	if err != nil {
		return err
	}
	if len(ts.Items) == 1 {
		return q.redirect("/ui/t/" + url.PathEscape(ts.Items[0].ID) + "/")
	}
	return q.render(http.StatusOK, "home.html", "Tenants", ts.Items)
}

// groupRef is a device group with its product.
type groupRef struct {
	Product client.Product
	Group   client.DeviceGroup
}

// Path is the group's PRODUCT/GROUP name, what the API's device_group field takes.
func (g groupRef) Path() string { return g.Product.Name + "/" + g.Group.Name }

// groups reads the tenant's products and their groups (bounded: one page of each).
func (q *req) groups() ([]client.Product, []groupRef, error) {
	ps, err := q.api.ListProducts(q.ctx, q.tenant.ID, client.ListOptions{Limit: 1000})
	if err != nil {
		return nil, nil, err
	}
	var out []groupRef
	for _, p := range ps.Items {
		gs, err := q.api.ListDeviceGroups(q.ctx, q.tenant.ID, p.ID, client.ListOptions{Limit: 1000})
		if err != nil {
			return nil, nil, err
		}
		for _, g := range gs.Items {
			out = append(out, groupRef{Product: p, Group: g})
		}
	}
	return ps.Items, out, nil
}

func groupName(gs []groupRef, productID, groupID string) string {
	if groupID == "" {
		return ""
	}
	for _, g := range gs {
		if g.Product.ID == productID && g.Group.ID == groupID {
			return g.Path()
		}
	}
	return groupID
}

func (q *req) groupHref(g groupRef) string {
	return q.base() + "products/" + url.PathEscape(g.Product.ID) + "/groups/" + url.PathEscape(g.Group.ID)
}

// overviewView is the fleet overview.
type overviewView struct {
	Products []productRow
}

type productRow struct {
	Product client.Product
	Groups  []groupRow
	// Status is the product's fleet-status matrix (overview only).
	Status *statusView
}

type groupRow struct {
	Ref     groupRef
	Href    string
	Current *client.Deployment
}

func overview(q *req) error {
	ps, gs, err := q.groups()
	if err != nil {
		return err
	}
	var v overviewView
	for _, p := range ps {
		row := productRow{Product: p}
		for _, g := range gs {
			if g.Product.ID != p.ID {
				continue
			}
			gr := groupRow{Ref: g, Href: q.groupHref(g)}
			deps, err := q.api.ListDeployments(q.ctx, q.tenant.ID, p.ID, g.Group.ID, client.ListOptions{Limit: 1})
			if err != nil {
				return err
			}
			if len(deps.Items) > 0 {
				gr.Current = &deps.Items[0]
			}
			row.Groups = append(row.Groups, gr)
		}
		st, err := q.fleetStatus(p)
		if err != nil {
			return err
		}
		row.Status = &st
		v.Products = append(v.Products, row)
	}
	return q.render(http.StatusOK, "overview.html", "Fleet", v)
}

// devicesPageSize is the console's device page: the API pages by ID, so a page of a
// 10,000-device tenant costs the same as the first.
const devicesPageSize = 50

type devicesView struct {
	Products []client.Product
	Groups   []groupRef
	States   []option
	Filter   deviceFilter
	// Status: the rows carry their fleet status (a product is chosen).
	Status  bool
	Devices []deviceRow
	Next    string
}

type deviceRow struct {
	Device  client.Device
	Href    string
	Group   string
	OS, App string
	Outcome string
	// Status, Should and Does: the device's fleet status, on the device list of a product.
	Status       *client.DeviceStatus
	Should, Does string
}

func (q *req) deviceHref(id string) string { return q.base() + "devices/" + url.PathEscape(id) }

func outcome(d client.Device) string {
	switch {
	case d.Attestation == nil:
		return "never attested"
	case d.Attestation.Refusal != "":
		return "refused: " + d.Attestation.Refusal
	}
	return "ok"
}

// running is what the device's last attestation measured, when it was accepted.
func running(d client.Device) (osv, app string) {
	if d.Attestation == nil || d.Attestation.Refusal != "" {
		return "", ""
	}
	for _, m := range d.Attestation.Images {
		switch m.Kind {
		case "os":
			osv = m.Path
		case "app":
			app = m.Path
		}
	}
	return osv, app
}

func devices(q *req) error {
	ps, gs, err := q.groups()
	if err != nil {
		return err
	}
	f, err := q.deviceFilter(ps, gs)
	if err != nil {
		return err
	}
	v := devicesView{Products: ps, Groups: gs, States: stateOptions, Filter: f, Status: f.Product != ""}
	token := q.r.URL.Query().Get("page_token")
	var next string
	if v.Status {
		// A product's devices come with what each should run beside what it does.
		if v.Devices, next, err = q.statusRows(f, gs, token); err != nil {
			return err
		}
	} else {
		page, err := q.api.ListDevices(q.ctx, q.tenant.ID, client.ListOptions{Limit: devicesPageSize, PageToken: token})
		if err != nil {
			return err
		}
		for _, d := range page.Items {
			r := deviceRow{Device: d, Href: q.deviceHref(d.ID), Group: groupName(gs, d.ProductID, d.GroupID), Outcome: outcome(d)}
			r.OS, r.App = running(d)
			v.Devices = append(v.Devices, r)
		}
		next = page.NextPageToken
	}
	if next != "" {
		qv := f.query()
		qv.Set("page_token", next)
		v.Next = q.base() + "devices?" + qv.Encode()
	}
	return q.render(http.StatusOK, "devices.html", "Devices", v)
}

type deviceView struct {
	Row          deviceRow
	Images       []client.Measurement
	Certificates []certRow
	Reports      []client.ErrorReportRecord
	ReportsHref  string
	Chart        Chart
	Groups       []string
	// Updates is a page of the device's update history, newest first; NextUpdates the
	// device page with the next one.
	Updates     []client.UpdateStateRecord
	NextUpdates string
}

type certRow struct {
	Cert    client.DeviceCertificate
	Group   string
	OS, App string
}

// chartDays is the span of the reports-per-day charts.
const chartDays = 14

func devicePage(q *req) error {
	id := q.r.PathValue("device")
	d, err := q.api.GetDevice(q.ctx, q.tenant.ID, id)
	if err != nil {
		return err
	}
	_, gs, err := q.groups()
	if err != nil {
		return err
	}
	v := deviceView{Row: deviceRow{Device: d, Href: q.deviceHref(d.ID), Group: groupName(gs, d.ProductID, d.GroupID), Outcome: outcome(d)},
		ReportsHref: q.deviceHref(d.ID) + "/error-reports"}
	v.Row.OS, v.Row.App = running(d)
	if d.Attestation != nil {
		v.Images = d.Attestation.Images
	}
	for _, g := range gs {
		v.Groups = append(v.Groups, g.Path())
	}
	certs, err := q.api.ListDeviceCertificates(q.ctx, q.tenant.ID, d.ID, client.ListOptions{})
	if err != nil {
		return err
	}
	for _, c := range certs.Items {
		r := certRow{Cert: c, Group: groupName(gs, c.ProductID, c.GroupID)}
		for _, m := range c.Images {
			switch m.Kind {
			case "os":
				r.OS = m.Path
			case "app":
				r.App = m.Path
			}
		}
		v.Certificates = append(v.Certificates, r)
	}
	if v.Chart, v.Reports, err = q.reportsChart(d.ID, 10); err != nil {
		return err
	}
	if err := q.updateHistory(&v); err != nil {
		return err
	}
	return q.render(http.StatusOK, "device.html", "Device "+short(d.ID), v)
}

// reportsChart charts the device's newest reports (up to one API page of 1000) per day,
// and returns the newest n of them.
func (q *req) reportsChart(id string, n int) (Chart, []client.ErrorReportRecord, error) {
	rs, err := q.api.ListErrorReports(q.ctx, q.tenant.ID, id, client.ListOptions{Limit: 1000})
	if err != nil {
		return Chart{}, nil, err
	}
	times := make([]time.Time, len(rs.Items))
	for i, r := range rs.Items {
		times[i] = r.ReceivedAt
	}
	c := Chart{Title: "Error reports per day, last " + strconv.Itoa(chartDays) + " days", Points: perDay(times, q.now, chartDays)}
	return c, rs.Items[:min(n, len(rs.Items))], nil
}

func (q *req) version() (int64, error) {
	v, err := strconv.ParseInt(q.r.PostForm.Get("version"), 10, 64)
	if err != nil || v <= 0 {
		return 0, &client.Error{Status: http.StatusBadRequest, Detail: "The form lacks the version of the device it changes; reload the page."}
	}
	return v, nil
}

// setBlocked blocks or unblocks a device (the API needs Administrator for it).
func setBlocked(q *req) error {
	version, err := q.version()
	if err != nil {
		return err
	}
	b, err := strconv.ParseBool(q.r.PostForm.Get("blocked"))
	if err != nil {
		return &client.Error{Status: http.StatusBadRequest, Detail: "blocked must be true or false."}
	}
	id := q.r.PathValue("device")
	if _, err := q.api.UpdateDevice(q.ctx, q.tenant.ID, id, version, client.DeviceUpdate{Blocked: &b}); err != nil {
		return err
	}
	return q.redirect(q.deviceHref(id))
}

// moveDevice puts a device into another group (PRODUCT/GROUP), or none.
func moveDevice(q *req) error {
	version, err := q.version()
	if err != nil {
		return err
	}
	g := q.r.PostForm.Get("group")
	id := q.r.PathValue("device")
	if _, err := q.api.UpdateDevice(q.ctx, q.tenant.ID, id, version, client.DeviceUpdate{DeviceGroup: &g}); err != nil {
		return err
	}
	return q.redirect(q.deviceHref(id))
}

type reportsView struct {
	DeviceID   string
	DeviceHref string
	Chart      Chart
	Reports    []client.ErrorReportRecord
	Next       string
}

func deviceErrorReports(q *req) error {
	id := q.r.PathValue("device")
	d, err := q.api.GetDevice(q.ctx, q.tenant.ID, id)
	if err != nil {
		return err
	}
	v := reportsView{DeviceID: d.ID, DeviceHref: q.deviceHref(d.ID)}
	if v.Chart, _, err = q.reportsChart(d.ID, 0); err != nil {
		return err
	}
	page, err := q.api.ListErrorReports(q.ctx, q.tenant.ID, d.ID, client.ListOptions{Limit: 50, PageToken: q.r.URL.Query().Get("page_token")})
	if err != nil {
		return err
	}
	v.Reports = page.Items
	if page.NextPageToken != "" {
		v.Next = v.DeviceHref + "/error-reports?" + url.Values{"page_token": {page.NextPageToken}}.Encode()
	}
	return q.render(http.StatusOK, "reports.html", "Error reports of "+short(d.ID), v)
}

func deployments(q *req) error {
	return overviewAs(q, "deployments.html", "Deployments")
}

func overviewAs(q *req, name, title string) error {
	ps, gs, err := q.groups()
	if err != nil {
		return err
	}
	var v overviewView
	for _, p := range ps {
		row := productRow{Product: p}
		for _, g := range gs {
			if g.Product.ID == p.ID {
				row.Groups = append(row.Groups, groupRow{Ref: g, Href: q.groupHref(g)})
			}
		}
		v.Products = append(v.Products, row)
	}
	return q.render(http.StatusOK, name, title, v)
}

type groupView struct {
	Ref         groupRef
	Href        string
	Deployments []client.Deployment
	Next        string
	Target      string
	// Rollout is the current deployment's rollout, when it is staged.
	Rollout *rolloutView
}

func (q *req) group() (groupRef, error) {
	p, err := q.api.GetProduct(q.ctx, q.tenant.ID, q.r.PathValue("product"))
	if err != nil {
		return groupRef{}, err
	}
	g, err := q.api.GetDeviceGroup(q.ctx, q.tenant.ID, p.ID, q.r.PathValue("group"))
	if err != nil {
		return groupRef{}, err
	}
	return groupRef{Product: p, Group: g}, nil
}

func groupPage(q *req) error {
	g, err := q.group()
	if err != nil {
		return err
	}
	v := groupView{Ref: g, Href: q.groupHref(g)}
	page, err := q.api.ListDeployments(q.ctx, q.tenant.ID, g.Product.ID, g.Group.ID, client.ListOptions{Limit: 20, PageToken: q.r.URL.Query().Get("page_token")})
	if err != nil {
		return err
	}
	v.Deployments = page.Items
	if page.NextPageToken != "" {
		v.Next = v.Href + "?" + url.Values{"page_token": {page.NextPageToken}}.Encode()
	}
	if len(v.Deployments) > 0 && q.r.URL.Query().Get("page_token") == "" {
		if v.Rollout, err = q.currentRollout(g, &v.Deployments[0]); err != nil {
			return err
		}
	}
	return q.render(http.StatusOK, "group.html", g.Path(), v)
}

// confirmDeploy is the confirmation step: it changes nothing, and shows what the deploy
// will do with a form that does it.
func confirmDeploy(q *req) error {
	g, err := q.group()
	if err != nil {
		return err
	}
	target := strings.TrimSpace(q.r.PostForm.Get("target"))
	if target == "" {
		return &client.Error{Status: http.StatusBadRequest, Detail: "Name the app image to deploy (apps/NAME/VERSION)."}
	}
	return q.render(http.StatusOK, "confirm.html", "Confirm deployment", groupView{Ref: g, Href: q.groupHref(g), Target: target})
}

func deploy(q *req) error {
	g, err := q.group()
	if err != nil {
		return err
	}
	if q.r.PostForm.Get("confirm") != "yes" {
		return &client.Error{Status: http.StatusBadRequest, Detail: "A deployment needs its confirmation step."}
	}
	if _, err := q.api.CreateDeployment(q.ctx, q.tenant.ID, g.Product.ID, g.Group.ID, client.DeploymentCreate{Target: q.r.PostForm.Get("target")}); err != nil {
		return err
	}
	return q.redirect(q.groupHref(g))
}

type auditView struct {
	Events []client.AuditEvent
	Next   string
	Denied string
}

func auditLog(q *req) error {
	page, err := q.api.ListAuditEvents(q.ctx, q.tenant.ID, client.ListOptions{Limit: 50, PageToken: q.r.URL.Query().Get("page_token")})
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusForbidden {
		return q.render(http.StatusForbidden, "audit.html", "Audit log", auditView{Denied: ce.Detail})
	}
	if err != nil {
		return err
	}
	v := auditView{Events: page.Items}
	if page.NextPageToken != "" {
		v.Next = q.base() + "audit?" + url.Values{"page_token": {page.NextPageToken}}.Encode()
	}
	return q.render(http.StatusOK, "audit.html", "Audit log", v)
}
