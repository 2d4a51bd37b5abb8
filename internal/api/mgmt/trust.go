package mgmt

import (
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/trust"
)

func (a *API) listSigningKeys(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	var out []trust.SigningKey
	err = a.readTenantOne(c, func(tt store.TenantTx) error {
		out, err = tt.SigningKeys().List(c.ctx, p)
		return err
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return listOf(out, p, func(k trust.SigningKey) string { return string(k.ID) }), nil
}

// createSigningKey registers a tenant's offline public key. Only an ECDSA P-256 public key
// is accepted; a private key pasted by mistake is refused without being stored or echoed.
func (a *API) createSigningKey(c *call) (any, error) {
	req := c.body.(trust.KeyCreate)
	pub, err := keys.ParsePublicPEM([]byte(req.PublicKeyPEM))
	if err != nil {
		return nil, &problem.Error{Kind: problem.Invalid, Code: "invalid_public_key", Field: "public_key_pem",
			Detail: "public_key_pem must be one PEM \"PUBLIC KEY\" block holding an ECDSA P-256 key (moat key generate writes one to FILE.pub)"}
	}
	k := trust.SigningKey{
		ID: trust.KeyID(ident.New(trust.IDPrefix, c.now)), TenantID: c.tenant, Name: req.Name,
		TUFKeyID: keys.KeyID(pub), Algorithm: trust.Algorithm, PublicKeyPEM: req.PublicKeyPEM, CreatedAt: c.now,
	}
	err = a.inTenant(c, func(tt store.TenantTx) error {
		if err := tt.SigningKeys().Create(c.ctx, k); err != nil {
			return err
		}
		return c.audit(tt, "signing_key.create", "signing_key", string(k.ID), "signing key "+k.Name+" (TUF key ID "+k.TUFKeyID+")")
	})
	if err != nil {
		p := storeProblem(err, "signing_key", "")
		if pe := problem.From(p); pe.Code == "name_taken" {
			pe.Detail = "the tenant already has a signing key with this name or this public key"
		}
		return nil, p
	}
	c.w.Header().Set("Location", "/api/v1/tenants/"+string(c.tenant)+"/signing-keys/"+string(k.ID))
	return k, nil
}

func (a *API) signingKeyID(c *call) (trust.KeyID, error) {
	id, err := pathID(c.r, "key", trust.IDPrefix, "signing_key")
	return trust.KeyID(id), err
}

func (a *API) getSigningKey(c *call) (any, error) {
	id, err := a.signingKeyID(c)
	if err != nil {
		return nil, err
	}
	var out trust.SigningKey
	err = a.readTenantOne(c, func(tt store.TenantTx) error {
		out, err = tt.SigningKeys().Get(c.ctx, id)
		return err
	})
	return out, storeProblem(err, "signing_key", string(id))
}

// revokeSigningKey revokes a key at once: it signs nothing from now on. The record stays.
func (a *API) revokeSigningKey(c *call) (any, error) {
	id, err := a.signingKeyID(c)
	if err != nil {
		return nil, err
	}
	var out trust.SigningKey
	err = a.inTenant(c, func(tt store.TenantTx) error {
		out, err = tt.SigningKeys().Revoke(c.ctx, id, c.now)
		if err != nil {
			return err
		}
		return c.audit(tt, "signing_key.revoke", "signing_key", string(id), "signing key "+out.Name)
	})
	if err == nil {
		// The key's apps are no longer genuine: wake the tenant's devices to re-check.
		a.fleet.Notify(c.tenant)
	}
	return out, storeProblem(err, "signing_key", string(id))
}
