package mgmt

import (
	"slices"
	"strings"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
)

// Fleet status (issue 11): the matrix of what a product's groups should run beside what
// their devices do run (GET .../fleet-status), each device's status (GET
// .../device-statuses), and the product, group and state filters they share with GET
// .../devices. Product and group are names, looked up in the path's tenant only, so a name
// of another tenant's product is NotFound like any unknown one (rule 3; attacked by
// TestFleetStatus_OtherTenantsProductIsNotFound).

// fleetQuery reads the product, group and state query parameters into a device filter:
// group and state need a product, and a state gets each group's should (fleet.StateFilter).
// needProduct makes the product required.
func (a *API) fleetQuery(c *call, needProduct bool) (device.Filter, error) {
	q := c.r.URL.Query()
	prodName, groupName, state := q.Get("product"), q.Get("group"), q.Get("state")
	var v problem.Validation
	if len(prodName) > 64 {
		v.Add("product", "invalid_filter", "product must be a product name")
	}
	if len(groupName) > 64 {
		v.Add("group", "invalid_filter", "group must be a device group name")
	}
	if state != "" && !slices.Contains(device.States, state) {
		v.Add("state", "invalid_state", "state must be one of %s", strings.Join(device.States, ", "))
	}
	if prodName == "" && (needProduct || groupName != "" || state != "") {
		v.Add("product", "product_required", "name the product (product=NAME): what a device should run is chosen per product and group")
	}
	if err := v.Err(); err != nil {
		return device.Filter{}, err
	}
	if prodName == "" {
		return device.Filter{}, nil
	}
	var pid product.ID
	var gid product.GroupID
	err := a.readTenant(c, func(tt store.TenantTx) error {
		p, err := tt.Products().GetByName(c.ctx, prodName)
		if err != nil {
			return storeProblem(err, "product", truncate(prodName))
		}
		pid = p.ID
		if groupName == "" {
			return nil
		}
		g, err := tt.Groups().GetByName(c.ctx, p.ID, groupName)
		if err != nil {
			return storeProblem(err, "device_group", truncate(groupName))
		}
		gid = g.ID
		return nil
	})
	if err != nil {
		return device.Filter{}, err
	}
	f, err := a.fleet.StateFilter(c.ctx, c.tenant, pid, gid, state)
	return f, storeProblem(err, "device_group", "")
}

func (a *API) getFleetStatus(c *call) (any, error) {
	f, err := a.fleetQuery(c, true)
	if err != nil {
		return nil, err
	}
	m, err := a.fleet.Status(c.ctx, c.tenant, f.ProductID, f.GroupID)
	return m, storeProblem(err, "product", "")
}

func (a *API) listDeviceStatuses(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	f, err := a.fleetQuery(c, true)
	if err != nil {
		return nil, err
	}
	items, err := a.fleet.DeviceStatuses(c.ctx, c.tenant, f, p)
	if err != nil {
		return nil, storeProblem(err, "device", "")
	}
	return listOf(items, p, func(d fleet.DeviceStatus) string { return string(d.ID) }), nil
}
