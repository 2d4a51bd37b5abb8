package mgmt

import (
	"errors"
	"strconv"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
)

func (a *API) listProducts(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	name := c.r.URL.Query().Get("name")
	var out []product.Product
	err = a.readTenantOne(c, func(tt store.TenantTx) error {
		if name != "" {
			x, err := tt.Products().GetByName(c.ctx, name)
			if err == nil {
				out = []product.Product{x}
			}
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}
		out, err = tt.Products().List(c.ctx, p)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "product", "")
	}
	return listOf(out, p, func(x product.Product) string { return string(x.ID) }), nil
}

func (a *API) createProduct(c *call) (any, error) {
	req := c.body.(product.Create)
	p := product.Product{
		ID: product.ID(ident.New(product.IDPrefix, c.now)), TenantID: c.tenant,
		Name: req.Name, Description: req.Description, MaxUpdateDeferralSeconds: req.Deferral(),
		CreatedAt: c.now, UpdatedAt: c.now, Version: 1,
	}
	err := a.inTenant(c, func(tt store.TenantTx) error {
		if err := tt.Products().Create(c.ctx, p); err != nil {
			return err
		}
		for _, dg := range product.DefaultGroups {
			g := newGroup(c, p.ID, dg)
			if err := tt.Groups().Create(c.ctx, g); err != nil {
				return err
			}
		}
		return c.audit(tt, "product.create", "product", string(p.ID), "product "+p.Name+" with "+strconv.Itoa(len(product.DefaultGroups))+" default device groups")
	})
	if err != nil {
		return nil, storeProblem(err, "product", "")
	}
	c.w.Header().Set("Location", "/api/v1/tenants/"+string(c.tenant)+"/products/"+string(p.ID))
	return p, nil
}

func newGroup(c *call, pid product.ID, req product.GroupCreate) product.Group {
	return product.Group{
		ID: product.GroupID(ident.New(product.GroupIDPrefix, c.now)), TenantID: c.tenant, ProductID: pid,
		Name: req.Name, Description: req.Description, OSFeed: req.OSFeed, UpdatePolicy: req.UpdatePolicy,
		MaintenanceWindow: req.MaintenanceWindow, CreatedAt: c.now, UpdatedAt: c.now, Version: 1,
	}
}

func (a *API) productID(c *call) (product.ID, error) {
	id, err := pathID(c.r, "product", product.IDPrefix, "product")
	return product.ID(id), err
}

func (a *API) getProduct(c *call) (any, error) {
	id, err := a.productID(c)
	if err != nil {
		return nil, err
	}
	var out product.Product
	err = a.readTenantOne(c, func(tt store.TenantTx) error {
		out, err = tt.Products().Get(c.ctx, id)
		return err
	})
	return out, storeProblem(err, "product", string(id))
}

func (a *API) updateProduct(c *call) (any, error) {
	id, err := a.productID(c)
	if err != nil {
		return nil, err
	}
	req := c.body.(product.Update)
	var out product.Product
	err = a.inTenant(c, func(tt store.TenantTx) error {
		cur, err := tt.Products().Get(c.ctx, id)
		if err != nil {
			return err
		}
		if err := c.checkIfMatch(cur.Version); err != nil {
			return err
		}
		out = req.Apply(cur)
		out.Version, out.UpdatedAt = cur.Version+1, c.now
		if err := tt.Products().Update(c.ctx, out); err != nil {
			return err
		}
		return c.audit(tt, "product.update", "product", string(id), "product "+out.Name)
	})
	if err == nil {
		// What the tenant's devices should run may have changed: wake their waits.
		a.fleet.Notify(c.tenant)
	}
	return out, storeProblem(err, "product", string(id))
}

func (a *API) deleteProduct(c *call) (any, error) {
	id, err := a.productID(c)
	if err != nil {
		return nil, err
	}
	err = a.inTenant(c, func(tt store.TenantTx) error {
		cur, err := tt.Products().Get(c.ctx, id)
		if err != nil {
			return err
		}
		if err := c.checkIfMatch(cur.Version); err != nil {
			return err
		}
		if err := tt.Products().Delete(c.ctx, id, cur.Version); err != nil {
			return err
		}
		return c.audit(tt, "product.delete", "product", string(id), "product "+cur.Name)
	})
	return nil, storeProblem(err, "product", string(id))
}

func (a *API) listGroups(c *call) (any, error) {
	pid, err := a.productID(c)
	if err != nil {
		return nil, err
	}
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	name := c.r.URL.Query().Get("name")
	var out []product.Group
	err = a.readTenant(c, func(tt store.TenantTx) error {
		if _, err := tt.Products().Get(c.ctx, pid); err != nil {
			return err
		}
		if name != "" {
			g, err := tt.Groups().GetByName(c.ctx, pid, name)
			if err == nil {
				out = []product.Group{g}
			}
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}
		out, err = tt.Groups().List(c.ctx, pid, p)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "product", string(pid))
	}
	return listOf(out, p, func(g product.Group) string { return string(g.ID) }), nil
}

func (a *API) createGroup(c *call) (any, error) {
	pid, err := a.productID(c)
	if err != nil {
		return nil, err
	}
	g := newGroup(c, pid, c.body.(product.GroupCreate))
	err = a.inTenant(c, func(tt store.TenantTx) error {
		if _, err := tt.Products().Get(c.ctx, pid); err != nil {
			return storeProblem(err, "product", string(pid))
		}
		if err := tt.Groups().Create(c.ctx, g); err != nil {
			return err
		}
		return c.audit(tt, "device_group.create", "device_group", string(g.ID), "device group "+g.Name)
	})
	if err != nil {
		return nil, storeProblem(err, "device_group", "")
	}
	c.w.Header().Set("Location", "/api/v1/tenants/"+string(c.tenant)+"/products/"+string(pid)+"/device-groups/"+string(g.ID))
	return g, nil
}

func (a *API) groupIDs(c *call) (product.ID, product.GroupID, error) {
	pid, err := a.productID(c)
	if err != nil {
		return "", "", err
	}
	gid, err := pathID(c.r, "group", product.GroupIDPrefix, "device_group")
	return pid, product.GroupID(gid), err
}

func (a *API) getGroup(c *call) (any, error) {
	pid, gid, err := a.groupIDs(c)
	if err != nil {
		return nil, err
	}
	var out product.Group
	err = a.readTenantOne(c, func(tt store.TenantTx) error {
		out, err = tt.Groups().Get(c.ctx, pid, gid)
		return err
	})
	return out, storeProblem(err, "device_group", string(gid))
}

func (a *API) updateGroup(c *call) (any, error) {
	pid, gid, err := a.groupIDs(c)
	if err != nil {
		return nil, err
	}
	req := c.body.(product.GroupUpdate)
	var out product.Group
	err = a.inTenant(c, func(tt store.TenantTx) error {
		cur, err := tt.Groups().Get(c.ctx, pid, gid)
		if err != nil {
			return err
		}
		if err := c.checkIfMatch(cur.Version); err != nil {
			return err
		}
		out = req.Apply(cur)
		out.Version, out.UpdatedAt = cur.Version+1, c.now
		if err := tt.Groups().Update(c.ctx, out); err != nil {
			return err
		}
		return c.audit(tt, "device_group.update", "device_group", string(gid), "device group "+out.Name)
	})
	if err == nil {
		// What the tenant's devices should run may have changed: wake their waits.
		a.fleet.Notify(c.tenant)
	}
	return out, storeProblem(err, "device_group", string(gid))
}

func (a *API) deleteGroup(c *call) (any, error) {
	pid, gid, err := a.groupIDs(c)
	if err != nil {
		return nil, err
	}
	err = a.inTenant(c, func(tt store.TenantTx) error {
		cur, err := tt.Groups().Get(c.ctx, pid, gid)
		if err != nil {
			return err
		}
		if err := c.checkIfMatch(cur.Version); err != nil {
			return err
		}
		if err := tt.Groups().Delete(c.ctx, pid, gid, cur.Version); err != nil {
			return err
		}
		return c.audit(tt, "device_group.delete", "device_group", string(gid), "device group "+cur.Name)
	})
	return nil, storeProblem(err, "device_group", string(gid))
}
