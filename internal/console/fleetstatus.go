package console

import (
	"net/url"
	"path"

	"github.com/moat-iot/moat/client"
)

// The fleet-status parts of the console (issue 11, "should vs does"): the matrix on the
// overview, per product (client.GetFleetStatus), and the device list's state filter with
// its should, does and state columns (client.ListDeviceStatuses). Both are the API's
// answers, counted in SQL (docs/fleet-status.md); the console only lays them out.

// stateOptions are the fleet states, for the device list's filter.
var stateOptions = []option{{"", "any state"}, {client.StateCurrent, "current"}, {client.StatePending, "pending"},
	{client.StateFailed, "failed"}, {client.StateRefused, "refused"}, {client.StateNever, "never attested"}}

// statusView is one product's fleet-status matrix.
type statusView struct {
	Status client.FleetStatus
	Groups []statusGroup
}

type statusGroup struct {
	Group  client.GroupStatus
	Should string
	Rows   []statusRow
	Totals []stateCell
}

type statusRow struct {
	Row   client.StatusRow
	Does  string
	Cells []stateCell
}

// stateCell is one count of the matrix, linking to the devices behind it.
type stateCell struct {
	State string
	Count int
	Href  string
}

// fleetStatus reads the matrix of product p and lays it out with links to the devices of
// each count.
func (q *req) fleetStatus(p client.Product) (statusView, error) {
	st, err := q.api.GetFleetStatus(q.ctx, q.tenant.ID, p.Name, "")
	if err != nil {
		return statusView{}, err
	}
	v := statusView{Status: st}
	for _, g := range st.Groups {
		sg := statusGroup{Group: g, Should: shouldText(g.Should)}
		for _, r := range g.Rows {
			sg.Rows = append(sg.Rows, statusRow{Row: r, Does: doesText(r.Does), Cells: q.stateCells(p.Name, g.GroupID, r.Counts)})
		}
		sg.Totals = q.stateCells(p.Name, g.GroupID, g.Totals)
		v.Groups = append(v.Groups, sg)
	}
	return v, nil
}

// stateCells are the counts per state in the matrix's column order.
func (q *req) stateCells(product, groupID string, c client.StateCounts) []stateCell {
	cells := []stateCell{{"", c.Devices, ""}, {client.StateCurrent, c.Current, ""}, {client.StatePending, c.Pending, ""},
		{client.StateFailed, c.Failed, ""}, {client.StateRefused, c.Refused, ""}, {client.StateNever, c.Never, ""}}
	for i := range cells {
		if cells[i].Count == 0 {
			continue
		}
		f := url.Values{"product": {product}, "group": {groupID}}
		if cells[i].State != "" {
			f.Set("state", cells[i].State)
		}
		cells[i].Href = q.base() + "devices?" + f.Encode()
	}
	return cells
}

// shouldText is a group's should, as the CLI prints it: "moat-os 1.0.0 + dw100-app 2.0.0".
func shouldText(s client.Should) string {
	osText, appText := "any OS", "any app"
	if s.OS != nil {
		osText = imageText(s.OS.Target, s.OS.Version)
	}
	if s.App != nil {
		appText = imageText(s.App.Target, s.App.Version)
	}
	return osText + " + " + appText
}

// doesText is what devices run: "—" for none known (never attested).
func doesText(r client.Running) string {
	if r.OSTarget == "" && r.AppTarget == "" {
		return "— (nothing attested)"
	}
	osText, appText := "no OS measured", "no app"
	if r.OSTarget != "" {
		osText = imageText(r.OSTarget, r.OSVersion)
	}
	if r.AppTarget != "" {
		appText = imageText(r.AppTarget, r.AppVersion)
	}
	return osText + " + " + appText
}

// imageText names an image by the target's name and its version.
func imageText(target, version string) string {
	name := path.Base(path.Dir(target))
	if name == "." || name == "/" {
		name = target
	}
	if version == "" {
		version = path.Base(target)
	}
	return name + " " + version
}

// deviceFilter is the device list's filters: product by name; group by ID (the console
// knows the product of each group, so a group alone implies its product); state.
type deviceFilter struct {
	Product, Group, State string
	// GroupName is the group's name, what the API's filter takes.
	GroupName string
}

// deviceFilter reads the device list's filters. A group or state without a product takes
// the only product, or is a 400 when there are several.
func (q *req) deviceFilter(ps []client.Product, gs []groupRef) (deviceFilter, error) {
	qs := q.r.URL.Query()
	f := deviceFilter{Product: qs.Get("product"), Group: qs.Get("group"), State: qs.Get("state")}
	if f.Group != "" {
		for _, g := range gs {
			if g.Group.ID == f.Group {
				f.Product, f.GroupName = g.Product.Name, g.Group.Name
			}
		}
		if f.GroupName == "" {
			f.GroupName = f.Group // unknown: the API answers 404
		}
	}
	if f.State != "" && f.Product == "" {
		if len(ps) != 1 {
			return f, badRequest("Choose a product to filter its devices by state.")
		}
		f.Product = ps[0].Name
	}
	return f, nil
}

// query is the filter as the device list's links carry it.
func (f deviceFilter) query() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"product": f.Product, "group": f.Group, "state": f.State} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// statusRows reads a page of the product's devices with their fleet status.
func (q *req) statusRows(f deviceFilter, gs []groupRef, token string) ([]deviceRow, string, error) {
	page, err := q.api.ListDeviceStatuses(q.ctx, q.tenant.ID, client.ListOptions{Limit: devicesPageSize, PageToken: token,
		Product: f.Product, Group: f.GroupName, State: f.State})
	if err != nil {
		return nil, "", err
	}
	rows := make([]deviceRow, 0, len(page.Items))
	for _, s := range page.Items {
		r := deviceRow{Device: client.Device{ID: s.ID, Blocked: s.Blocked, LastSeenAt: s.LastSeenAt, UpdateState: s.UpdateState, UpdateStateAt: s.UpdateStateAt},
			Href: q.deviceHref(s.ID), Group: groupName(gs, s.ProductID, s.GroupID), Status: &s}
		r.Outcome = "never attested"
		if a := s.Attestation; a != nil {
			r.Outcome = "ok"
			if a.Refusal != "" {
				r.Outcome = "refused: " + a.Refusal
			}
		}
		r.Should = shouldText(s.Should)
		r.Does = doesText(s.Does)
		rows = append(rows, r)
	}
	return rows, page.NextPageToken, nil
}
