package mgmt

import (
	"errors"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

var validID = ident.Valid

// Me describes the caller.
type Me struct {
	User    auth.User    `json:"user"`
	TokenID auth.TokenID `json:"token_id"`
	Roles   []TenantRole `json:"roles"`
}

// TenantRole is one of the caller's roles.
type TenantRole struct {
	TenantID tenant.ID `json:"tenant_id"`
	Role     auth.Role `json:"role"`
}

func (a *API) getMe(c *call) (any, error) {
	me := Me{User: c.principal.User, TokenID: c.principal.TokenID, Roles: []TenantRole{}}
	for t, r := range c.principal.Roles {
		me.Roles = append(me.Roles, TenantRole{TenantID: t, Role: r})
	}
	sortRoles(me.Roles)
	return me, nil
}

func sortRoles(rs []TenantRole) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].TenantID < rs[j-1].TenantID; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// Token lifetimes a caller may ask for.
const (
	MinTokenTTL = time.Hour
	MaxTokenTTL = 366 * 24 * time.Hour
)

// TokenCreate asks for a new API token for the caller.
type TokenCreate struct {
	Name string `json:"name"`
	// ExpiresIn is a Go duration ("720h"); absent means the token does not expire.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// Validate reports every problem with the request.
func (t TokenCreate) Validate() error {
	var v problem.Validation
	ident.CheckName(&v, "name", t.Name)
	if t.ExpiresIn != "" {
		d, err := time.ParseDuration(t.ExpiresIn)
		switch {
		case err != nil:
			v.Add("expires_in", "invalid_duration", "expires_in must be a duration such as 720h")
		case d < MinTokenTTL || d > MaxTokenTTL:
			v.Add("expires_in", "invalid_duration", "expires_in must be from 1h to 8784h")
		}
	}
	return v.Err()
}

func (t TokenCreate) ttl() time.Duration {
	d, _ := time.ParseDuration(t.ExpiresIn) // validated
	return d
}

// TokenCreated is a new token with its secret, which is shown this once.
type TokenCreated struct {
	Token  auth.Token `json:"token"`
	Secret string     `json:"secret"`
}

func (a *API) listTokens(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	var out []auth.Token
	err = a.store.InReadTx(c.ctx, func(tx store.Tx) error {
		out, err = tx.Tokens().ListForUser(c.ctx, c.principal.User.ID, p)
		return err
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return listOf(out, p, func(t auth.Token) string { return string(t.ID) }), nil
}

func (a *API) createToken(c *call) (any, error) {
	req := c.body.(TokenCreate)
	tok, secret := auth.NewToken(c.principal.User.ID, req.Name, c.now, req.ttl())
	err := a.store.InTx(c.ctx, func(tx store.Tx) error {
		if err := tx.Tokens().Create(c.ctx, tok); err != nil {
			return err
		}
		return a.auditEverywhere(c, tx, "token.create", "token", string(tok.ID), "token "+req.Name)
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	c.w.Header().Set("Location", "/api/v1/tokens/"+string(tok.ID))
	return TokenCreated{Token: tok, Secret: secret}, nil
}

func (a *API) revokeToken(c *call) (any, error) {
	id, err := pathID(c.r, "token", "tok", "token")
	if err != nil {
		return nil, err
	}
	var out auth.Token
	err = a.store.InTx(c.ctx, func(tx store.Tx) error {
		out, err = tx.Tokens().Revoke(c.ctx, c.principal.User.ID, auth.TokenID(id), c.now)
		if err != nil {
			return err
		}
		return a.auditEverywhere(c, tx, "token.revoke", "token", id, "token "+out.Name)
	})
	// The very next request with the token is refused, on this replica before this one
	// returns (TestAuth_RevokedTokenStopsAtOnce), on the others through the publisher.
	a.authChanged(AuthChangeToken, id)
	return out, storeProblem(err, "token", id)
}

// auditEverywhere records a change to a user's own credentials in the audit log of every
// tenant where the user holds a role, so each tenant's administrators see it.
func (a *API) auditEverywhere(c *call, tx store.Tx, action, objType, objID, detail string) error {
	for t := range c.principal.Roles {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		if err := c.audit(tt, action, objType, objID, detail); err != nil {
			return err
		}
	}
	return nil
}

func (a *API) listTenants(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	name := c.r.URL.Query().Get("name")
	var out []tenant.Tenant
	err = a.store.InReadTx(c.ctx, func(tx store.Tx) error {
		if name != "" {
			t, err := tx.Tenants().GetByName(c.ctx, name)
			if errors.Is(err, store.ErrNotFound) {
				out = nil
				return nil
			}
			if err != nil {
				return err
			}
			if c.principal.User.PlatformOperator || c.principal.Member(t.ID) {
				out = []tenant.Tenant{t}
			}
			return nil
		}
		if c.principal.User.PlatformOperator {
			out, err = tx.Tenants().List(c.ctx, p)
		} else {
			out, err = tx.Tenants().ListForUser(c.ctx, c.principal.User.ID, p)
		}
		return err
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return listOf(out, p, func(t tenant.Tenant) string { return string(t.ID) }), nil
}

func (a *API) createTenant(c *call) (any, error) {
	req := c.body.(tenant.Create)
	t := tenant.Tenant{
		ID: tenant.ID(ident.New(tenant.IDPrefix, c.now)), Name: req.Name,
		CreatedAt: c.now, UpdatedAt: c.now, Version: 1,
	}
	// The tenant's device CA is created with it; the platform root certifies it offline
	// (moat platform ca-sign).
	ca, err := a.fleet.NewPendingCA(t.ID, c.now)
	if err != nil {
		return nil, problem.Wrap(err)
	}
	err = a.store.InTx(c.ctx, func(tx store.Tx) error {
		if err := tx.Tenants().Create(c.ctx, t); err != nil {
			return err
		}
		tt, err := tx.ForTenant(t.ID)
		if err != nil {
			return err
		}
		if err := tt.Members().Put(c.ctx, c.principal.User.ID, auth.Administrator, c.now); err != nil {
			return err
		}
		if err := tt.DeviceCAs().Create(c.ctx, ca); err != nil {
			return err
		}
		c.tenant = t.ID
		if err := c.auditPlatform(tx, "tenant.create", "tenant", string(t.ID), "tenant "+t.Name); err != nil {
			return err
		}
		if err := c.audit(tt, "tenant.create", "tenant", string(t.ID), "tenant "+t.Name); err != nil {
			return err
		}
		return c.audit(tt, "member.put", "user", string(c.principal.User.ID), "creator granted Administrator")
	})
	// The creator's cached principal lacks the new tenant's role.
	a.authChanged(AuthChangeUser, string(c.principal.User.ID))
	if err != nil {
		return nil, storeProblem(err, "tenant", string(t.ID))
	}
	c.w.Header().Set("Location", "/api/v1/tenants/"+string(t.ID))
	return t, nil
}

func (a *API) getTenant(c *call) (any, error) {
	var out tenant.Tenant
	err := a.store.InReadTx(c.ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Tenants().Get(c.ctx, c.tenant)
		return err
	})
	return out, storeProblem(err, "tenant", string(c.tenant))
}

// MemberCreate creates a new user with a role in the tenant.
type MemberCreate struct {
	Name string    `json:"name"`
	Role auth.Role `json:"role"`
}

// Validate reports every problem with the request.
func (m MemberCreate) Validate() error {
	var v problem.Validation
	ident.CheckName(&v, "name", m.Name)
	checkRole(&v, m.Role)
	return v.Err()
}

func checkRole(v *problem.Validation, r auth.Role) {
	if !r.Valid() {
		v.Add("role", "invalid_role", "role must be Reader, Contributor or Administrator")
	}
}

// MemberCreated is the new member and its first token, whose secret is shown this once.
type MemberCreated struct {
	Member auth.Member `json:"member"`
	Token  auth.Token  `json:"token"`
	Secret string      `json:"secret"`
}

// MemberPut grants a role.
type MemberPut struct {
	Role auth.Role `json:"role"`
}

// Validate reports every problem with the request.
func (m MemberPut) Validate() error {
	var v problem.Validation
	checkRole(&v, m.Role)
	return v.Err()
}

func (a *API) listMembers(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	var out []auth.Member
	err = a.readTenantOne(c, func(tt store.TenantTx) error {
		out, err = tt.Members().List(c.ctx, p)
		return err
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return listOf(out, p, func(m auth.Member) string { return string(m.User.ID) }), nil
}

func (a *API) createMember(c *call) (any, error) {
	req := c.body.(MemberCreate)
	u := auth.User{ID: auth.UserID(ident.New("usr", c.now)), Name: req.Name, CreatedAt: c.now}
	tok, secret := auth.NewToken(u.ID, "initial", c.now, 0)
	var m auth.Member
	err := a.store.InTx(c.ctx, func(tx store.Tx) error {
		if err := tx.Users().Create(c.ctx, u); err != nil {
			return err
		}
		if err := tx.Tokens().Create(c.ctx, tok); err != nil {
			return err
		}
		tt, err := tx.ForTenant(c.tenant)
		if err != nil {
			return err
		}
		if err := tt.Members().Put(c.ctx, u.ID, req.Role, c.now); err != nil {
			return err
		}
		if m, err = tt.Members().Get(c.ctx, u.ID); err != nil {
			return err
		}
		return c.audit(tt, "member.create", "user", string(u.ID), fmt.Sprintf("user %s created as %s", u.Name, req.Role))
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	c.w.Header().Set("Location", "/api/v1/tenants/"+string(c.tenant)+"/members/"+string(u.ID))
	return MemberCreated{Member: m, Token: tok, Secret: secret}, nil
}

func (a *API) putMember(c *call) (any, error) {
	id, err := pathID(c.r, "user", "usr", "user")
	if err != nil {
		return nil, err
	}
	req := c.body.(MemberPut)
	var m auth.Member
	err = a.inTenant(c, func(tt store.TenantTx) error {
		// Only members of this tenant: granting a role to another tenant's user by ID would
		// reveal that user's name across tenants (rule 3).
		if _, err := tt.Members().Get(c.ctx, auth.UserID(id)); err != nil {
			return err
		}
		if err := a.keepAnAdministrator(c, tt, auth.UserID(id), req.Role); err != nil {
			return err
		}
		if err := tt.Members().Put(c.ctx, auth.UserID(id), req.Role, c.now); err != nil {
			return err
		}
		var err error
		if m, err = tt.Members().Get(c.ctx, auth.UserID(id)); err != nil {
			return err
		}
		return c.audit(tt, "member.put", "user", id, "role "+string(req.Role))
	})
	// A lowered role binds at the user's very next request (TestAuth_RoleChangeAppliesAtOnce).
	a.authChanged(AuthChangeUser, id)
	return m, storeProblem(err, "user", id)
}

func (a *API) deleteMember(c *call) (any, error) {
	id, err := pathID(c.r, "user", "usr", "user")
	if err != nil {
		return nil, err
	}
	err = a.inTenant(c, func(tt store.TenantTx) error {
		if err := a.keepAnAdministrator(c, tt, auth.UserID(id), ""); err != nil {
			return err
		}
		if err := tt.Members().Delete(c.ctx, auth.UserID(id)); err != nil {
			return err
		}
		return c.audit(tt, "member.delete", "user", id, "role removed")
	})
	// A removed member sees nothing of the tenant from its very next request
	// (TestAuth_RemovedMemberStopsAtOnce).
	a.authChanged(AuthChangeUser, id)
	return nil, storeProblem(err, "user", id)
}

// keepAnAdministrator refuses a change that would leave the tenant without an
// Administrator, which nobody but a platform operator could undo.
func (a *API) keepAnAdministrator(c *call, tt store.TenantTx, user auth.UserID, newRole auth.Role) error {
	m, err := tt.Members().Get(c.ctx, user)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if m.Role != auth.Administrator || newRole == auth.Administrator {
		return nil
	}
	n, err := tt.Members().CountRole(c.ctx, auth.Administrator)
	if err != nil {
		return err
	}
	if n <= 1 {
		return problem.New(problem.Conflict, "last_administrator", "the tenant must keep at least one Administrator")
	}
	return nil
}

func (a *API) listAudit(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	var out []audit.Event
	err = a.readTenantOne(c, func(tt store.TenantTx) error {
		out, err = tt.Audit().List(c.ctx, p)
		return err
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return listOf(out, p, func(e audit.Event) string { return e.ID }), nil
}

func (a *API) listPlatformAudit(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	var out []audit.Event
	err = a.store.InReadTx(c.ctx, func(tx store.Tx) error {
		out, err = tx.PlatformAudit().List(c.ctx, p)
		return err
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return listOf(out, p, func(e audit.Event) string { return e.ID }), nil
}
