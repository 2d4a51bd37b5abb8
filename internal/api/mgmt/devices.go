package mgmt

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Claimed is the answer to a claim: the devices now in the tenant.
type Claimed struct {
	Devices []device.Device `json:"devices"`
}

// NonceRequest asks for an attestation nonce.
type NonceRequest struct {
	DeviceID device.ID `json:"device_id"`
}

// Validate checks the request's shape.
func (n NonceRequest) Validate() error {
	var v problem.Validation
	if !identity.ValidID(string(n.DeviceID)) {
		v.Add("device_id", "invalid_device_id", "device_id must be 64 lower-case hex digits")
	}
	return v.Err()
}

// PlatformCertificate is the platform root certificate as the server holds it.
type PlatformCertificate struct {
	CertificatePEM string `json:"certificate_pem"`
}

// rawFile is a non-JSON body a handler returns, served as it is.
type rawFile struct {
	contentType string
	data        []byte
}

// pemBody reads a bounded PEM body (application/x-pem-file).
func (c *call) pemBody() ([]byte, error) {
	mt, _, err := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-pem-file" {
		return nil, problem.New(problem.Unsupported, "unsupported_media_type", "the body must be application/x-pem-file")
	}
	b, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, problem.New(problem.TooLarge, "body_too_large", "the body must be at most %d bytes", MaxBodyBytes)
		}
		return nil, problem.New(problem.Invalid, "body_unreadable", "the body could not be read")
	}
	if len(b) == 0 {
		return nil, problem.New(problem.Invalid, "body_required", "a PEM certificate is required")
	}
	return b, nil
}

func (a *API) registerDevice(c *call) (any, error) {
	req := c.body.(device.Register)
	pub, err := keys.ParsePublicPEM([]byte(req.PublicKeyPEM))
	if err != nil {
		return nil, &problem.Error{Kind: problem.Invalid, Code: "invalid_public_key", Field: "public_key_pem", Detail: "public_key_pem is not an ECDSA P-256 public key in PEM", Err: err}
	}
	pemText, err := keys.EncodePublicPEM(pub)
	if err != nil {
		return nil, problem.Wrap(err)
	}
	d := device.Device{ID: identity.IDFromPublicKey(pub), PublicKeyPEM: string(pemText), RegisteredAt: c.now, Floors: map[string]uint32{}, Version: 1}
	err = a.store.InTx(c.ctx, func(tx store.Tx) error {
		if err := tx.Devices().Register(c.ctx, d); err != nil {
			return err
		}
		return c.auditPlatform(tx, "device.register", "device", string(d.ID), "")
	})
	if errors.Is(err, store.ErrConflict) {
		return nil, problem.New(problem.Conflict, "device_registered", "device %s is already registered", d.ID)
	}
	if err != nil {
		return nil, storeProblem(err, "device", string(d.ID))
	}
	c.w.Header().Set("Location", "/api/v1/platform/devices/"+string(d.ID))
	return d, nil
}

func (a *API) claimDevices(c *call) (any, error) {
	req := c.body.(device.Claim)
	out := Claimed{Devices: []device.Device{}}
	err := a.store.InTx(c.ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(c.tenant)
		if err != nil {
			return err
		}
		seen := map[device.ID]bool{}
		for _, id := range req.DeviceIDs {
			if seen[id] {
				continue
			}
			seen[id] = true
			d, err := tx.Devices().Claim(c.ctx, id, c.tenant, c.now)
			if errors.Is(err, store.ErrNotFound) {
				return problem.New(problem.NotFound, "device_not_found", "no registered device %s", id)
			}
			if errors.Is(err, store.ErrConflict) {
				return &problem.Error{Kind: problem.Conflict, Code: "device_claimed", Field: "device_ids", Detail: fmt.Sprintf("device %s is claimed by another tenant", id)}
			}
			if err != nil {
				return err
			}
			if err := c.audit(tt, "device.claim", "device", string(id), ""); err != nil {
				return err
			}
			out.Devices = append(out.Devices, d)
		}
		return nil
	})
	if err != nil {
		return nil, storeProblem(err, "device", "")
	}
	a.fleet.Notify(c.tenant) // the claimed devices are the tenant's now
	return out, nil
}

func (a *API) listDevices(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	f, err := a.fleetQuery(c, false) // product, group, state (fleetstatus.go)
	if err != nil {
		return nil, err
	}
	var items []device.Device
	err = a.readTenant(c, func(tt store.TenantTx) error {
		var err error
		items, err = tt.Devices().List(c.ctx, f, p)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "device", "")
	}
	return listOf(items, p, func(d device.Device) string { return string(d.ID) }), nil
}

func (a *API) deviceID(c *call) (device.ID, error) {
	id := c.r.PathValue("device")
	if !identity.ValidID(id) {
		return "", problem.New(problem.NotFound, "device_not_found", "no device %s", truncate(id))
	}
	return device.ID(id), nil
}

func (a *API) getDevice(c *call) (any, error) {
	id, err := a.deviceID(c)
	if err != nil {
		return nil, err
	}
	var d device.Device
	err = a.readTenant(c, func(tt store.TenantTx) error {
		d, err = tt.Devices().Get(c.ctx, id)
		return err
	})
	return d, storeProblem(err, "device", string(id))
}

func (a *API) updateDevice(c *call) (any, error) {
	id, err := a.deviceID(c)
	if err != nil {
		return nil, err
	}
	req := c.body.(device.Update)
	if req.Blocked != nil || req.Development != nil {
		// Blocking and the development capability change what a device may prove.
		if err := c.principal.Require(c.tenant, auth.Administrator); err != nil {
			return nil, err
		}
	}
	var d device.Device
	err = a.inTenant(c, func(tt store.TenantTx) error {
		if d, err = tt.Devices().Get(c.ctx, id); err != nil {
			return err
		}
		if err := c.checkIfMatch(d.Version); err != nil {
			return err
		}
		var changes []string
		if req.Group != nil {
			if d.ProductID, d.GroupID, err = groupByPath(c, tt, *req.Group); err != nil {
				return err
			}
			changes = append(changes, "device_group="+*req.Group)
		}
		if req.Blocked != nil {
			d.Blocked = *req.Blocked
			changes = append(changes, fmt.Sprintf("blocked=%t", d.Blocked))
		}
		if req.Development != nil {
			d.Development = *req.Development
			changes = append(changes, fmt.Sprintf("development=%t", d.Development))
		}
		d.Version++
		if err := tt.Devices().Update(c.ctx, d); err != nil {
			return err
		}
		return c.audit(tt, "device.update", "device", string(id), strings.Join(changes, " "))
	})
	if err == nil {
		// What the tenant's devices should run may have changed: wake their waits.
		a.fleet.Notify(c.tenant)
	}
	return d, storeProblem(err, "device", string(id))
}

// groupByPath resolves "PRODUCT/GROUP" (names) in the tenant; "" means no group.
func groupByPath(c *call, tt store.TenantTx, path string) (product.ID, product.GroupID, error) {
	if path == "" {
		return "", "", nil
	}
	pname, gname, ok := strings.Cut(path, "/")
	bad := &problem.Error{Kind: problem.Invalid, Code: "device_group_not_found", Field: "device_group",
		Detail: fmt.Sprintf("no device group %q in this tenant (use PRODUCT/GROUP)", truncate(path))}
	if !ok {
		return "", "", bad
	}
	p, err := tt.Products().GetByName(c.ctx, pname)
	if errors.Is(err, store.ErrNotFound) {
		return "", "", bad
	} else if err != nil {
		return "", "", err
	}
	g, err := tt.Groups().GetByName(c.ctx, p.ID, gname)
	if errors.Is(err, store.ErrNotFound) {
		return "", "", bad
	} else if err != nil {
		return "", "", err
	}
	return p.ID, g.ID, nil
}

func (a *API) listDeviceCertificates(c *call) (any, error) {
	id, err := a.deviceID(c)
	if err != nil {
		return nil, err
	}
	var items []device.Certificate
	err = a.readTenant(c, func(tt store.TenantTx) error {
		if _, err := tt.Devices().Get(c.ctx, id); err != nil {
			return err
		}
		items, err = tt.Certificates().ListForDevice(c.ctx, id, 100)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "device", string(id))
	}
	return List[device.Certificate]{Items: items}, nil
}

func (a *API) listDeviceCAs(c *call) (any, error) {
	var items []device.CA
	err := a.readTenant(c, func(tt store.TenantTx) error {
		var err error
		items, err = tt.DeviceCAs().List(c.ctx)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "device_ca", "")
	}
	return List[device.CA]{Items: items}, nil
}

func (a *API) getDeviceCAChain(c *call) (any, error) {
	chain, err := a.fleet.Chain(c.ctx, c.tenant)
	if errors.Is(err, fleet.ErrNoPlatformCA) {
		return nil, problem.New(problem.Conflict, "platform_not_initialized", "the platform has no root certificate yet (moat platform init)")
	}
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return rawFile{contentType: "application/x-pem-file", data: chain}, nil
}

// rotateDeviceCA creates the tenant's next CA; it becomes active, and the current one
// retires with an overlap, when the platform root certifies it (moat platform ca-sign).
func (a *API) rotateDeviceCA(c *call) (any, error) {
	ca, err := a.fleet.NewPendingCA(c.tenant, c.now)
	if err != nil {
		return nil, problem.Wrap(err)
	}
	err = a.inTenant(c, func(tt store.TenantTx) error {
		all, err := tt.DeviceCAs().List(c.ctx)
		if err != nil {
			return err
		}
		for _, old := range all {
			if old.State == device.CAPending {
				return problem.New(problem.Conflict, "ca_pending", "CA %s already waits for the platform root to certify it", old.ID)
			}
		}
		if err := tt.DeviceCAs().Create(c.ctx, ca); err != nil {
			return err
		}
		return c.audit(tt, "device_ca.create", "device_ca", ca.ID, "pending certification by the platform root")
	})
	if err != nil {
		return nil, storeProblem(err, "device_ca", ca.ID)
	}
	return ca, nil
}

func (a *API) listPendingDeviceCAs(c *call) (any, error) {
	var items []device.CA
	err := a.store.InReadTx(c.ctx, func(tx store.Tx) error {
		var err error
		items, err = tx.PendingCAs(c.ctx)
		return err
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return List[device.CA]{Items: items}, nil
}

func (a *API) putDeviceCACertificate(c *call) (any, error) {
	body, err := c.pemBody()
	if err != nil {
		return nil, err
	}
	t := tenant.ID(c.r.PathValue("tenant"))
	caID := c.r.PathValue("ca")
	if !ident.Valid(tenant.IDPrefix, string(t)) || !ident.Valid(device.CAIDPrefix, caID) {
		return nil, problem.New(problem.NotFound, "device_ca_not_found", "no device CA %s", truncate(caID))
	}
	var ca device.CA
	err = a.store.InTx(c.ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		if ca, err = a.fleet.ActivateCA(c.ctx, tt, caID, body, c.now); err != nil {
			return err
		}
		c.tenant = t
		if err := c.auditPlatform(tx, "device_ca.activate", "device_ca", caID, "tenant "+string(t)); err != nil {
			return err
		}
		return c.audit(tt, "device_ca.activate", "device_ca", caID, "certified by the platform root")
	})
	switch {
	case errors.Is(err, fleet.ErrBadCA):
		return nil, &problem.Error{Kind: problem.Invalid, Code: "bad_ca_certificate", Detail: "the certificate does not certify this pending CA under the platform root: " + err.Error(), Err: err}
	case errors.Is(err, fleet.ErrNoPlatformCA):
		return nil, problem.New(problem.Conflict, "platform_not_initialized", "the platform has no root certificate yet (moat platform init)")
	}
	return ca, storeProblem(err, "device_ca", caID)
}

func (a *API) putPlatformCertificate(c *call) (any, error) {
	body, err := c.pemBody()
	if err != nil {
		return nil, err
	}
	if err := a.fleet.CheckRoot(c.ctx, body); err != nil {
		return nil, &problem.Error{Kind: problem.Invalid, Code: "bad_root_certificate", Detail: err.Error(), Err: err}
	}
	err = a.store.InTx(c.ctx, func(tx store.Tx) error {
		if err := tx.PlatformCA().Put(c.ctx, string(body), c.now); err != nil {
			return err
		}
		return c.auditPlatform(tx, "platform_ca.put", "platform_ca", "root", "")
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	a.fleet.ForgetRoot()
	return PlatformCertificate{CertificatePEM: string(body)}, nil
}

func (a *API) createDeployment(c *call) (any, error) {
	req := c.body.(device.DeploymentCreate)
	pid, gid := product.ID(c.r.PathValue("product")), product.GroupID(c.r.PathValue("group"))
	var (
		p    product.Product
		base *device.Deployment // the group's current deployment: a rollout's base
	)
	err := a.readTenant(c, func(tt store.TenantTx) error {
		var err error
		if p, err = tt.Products().Get(c.ctx, pid); err != nil {
			return err
		}
		if _, err = tt.Groups().Get(c.ctx, pid, gid); err != nil {
			return err
		}
		base, err = currentOf(c, tt, pid, gid)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "device_group", string(gid))
	}
	im, err := a.deployableImage(c, p, req.Target, "target", "")
	if err != nil {
		return nil, err
	}
	r, err := a.stagedParts(c, req, im, base)
	if err != nil {
		return nil, err
	}
	d := device.Deployment{ID: ident.New(device.DeploymentIDPrefix, c.now), TenantID: c.tenant, ProductID: pid, GroupID: gid,
		Target: im.Path, SHA256: im.SHA256, CreatedAt: c.now, CreatedBy: c.principal.User.Name, Rollout: r, IgnoreWindow: req.IgnoreWindow}
	err = a.inTenant(c, func(tt store.TenantTx) error {
		if _, err := tt.Groups().Get(c.ctx, pid, gid); err != nil {
			return err
		}
		if r != nil || req.IgnoreWindow { // both were judged against base: it must still be current
			now, err := currentOf(c, tt, pid, gid)
			if err != nil {
				return err
			}
			if !sameDeployment(now, base) {
				return problem.New(problem.Conflict, "deployment_changed", "the group's current deployment changed while this one was made; look again and retry")
			}
		}
		if err := tt.Deployments().Create(c.ctx, d); err != nil {
			return err
		}
		return c.audit(tt, "deployment.create", "deployment", d.ID, deploymentAuditDetail(d, gid))
	})
	if err != nil {
		return nil, storeProblem(err, "device_group", string(gid))
	}
	a.fleet.Notify(c.tenant) // the group's devices should run the deployment
	return d, nil
}

// deployableImage returns target's entry in the tenant's catalog (its current apps.json)
// when it is an app image for product p: what every new deployment, a rollback included,
// must name. A revoked or removed target is no longer in the catalog. field names the
// request field the problem is about; why, when set, starts the detail.
func (a *API) deployableImage(c *call, p product.Product, target, field, why string) (repo.Image, error) {
	cat, err := a.repo.Catalog(c.ctx, c.tenant)
	if err != nil {
		return repo.Image{}, problem.Wrap(err)
	}
	im, ok := cat.Images[target]
	if !ok || im.Kind != "app" {
		return repo.Image{}, &problem.Error{Kind: problem.Invalid, Code: "image_not_found", Field: field,
			Detail: fmt.Sprintf("%s%s is not a current app image of this tenant (moat image list)", why, truncate(target))}
	}
	if !strings.EqualFold(im.Product, p.Name) {
		return repo.Image{}, &problem.Error{Kind: problem.Invalid, Code: "wrong_product", Field: field,
			Detail: fmt.Sprintf("%s%s is for product %s, not %s", why, im.Path, im.Product, p.Name)}
	}
	return im, nil
}

func (a *API) getDeployment(c *call) (any, error) {
	pid, gid := product.ID(c.r.PathValue("product")), product.GroupID(c.r.PathValue("group"))
	id, err := pathID(c.r, "deployment", device.DeploymentIDPrefix, "deployment")
	if err != nil {
		return nil, err
	}
	var d device.Deployment
	err = a.readTenant(c, func(tt store.TenantTx) error {
		if _, err := tt.Groups().Get(c.ctx, pid, gid); err != nil {
			return storeProblem(err, "device_group", string(gid))
		}
		d, err = tt.Deployments().Get(c.ctx, pid, gid, id)
		return storeProblem(err, "deployment", id)
	})
	if err != nil {
		return nil, storeProblem(err, "device_group", string(gid))
	}
	return d, nil
}

// rollbackDeployment deploys an earlier deployment's target again: a new deployment that
// names the one it reverts (the group's current one). The target must still be deployable,
// exactly as for createDeployment; otherwise nothing changes.
func (a *API) rollbackDeployment(c *call) (any, error) {
	req := c.body.(device.DeploymentRollback)
	pid, gid := product.ID(c.r.PathValue("product")), product.GroupID(c.r.PathValue("group"))
	var (
		p       product.Product
		cur, to device.Deployment
		nothing = problem.New(problem.Conflict, "nothing_to_roll_back", "nothing to roll back to: the group has no deployment before its current one")
	)
	err := a.readTenant(c, func(tt store.TenantTx) error {
		var err error
		if p, err = tt.Products().Get(c.ctx, pid); err != nil {
			return storeProblem(err, "device_group", string(gid))
		}
		if _, err = tt.Groups().Get(c.ctx, pid, gid); err != nil {
			return storeProblem(err, "device_group", string(gid))
		}
		recent, err := tt.Deployments().List(c.ctx, pid, gid, store.Page{Limit: 2})
		switch {
		case err != nil:
			return problem.Wrap(err)
		case len(recent) == 0:
			return nothing
		}
		cur = recent[0]
		if req.To == "" {
			if len(recent) < 2 {
				return nothing
			}
			to = recent[1]
			return nil
		}
		to, err = tt.Deployments().Get(c.ctx, pid, gid, req.To)
		return storeProblem(err, "deployment", req.To)
	})
	if err != nil {
		return nil, storeProblem(err, "device_group", string(gid))
	}
	if to.ID == cur.ID {
		return nil, &problem.Error{Kind: problem.Conflict, Code: "nothing_to_roll_back", Field: "to",
			Detail: fmt.Sprintf("%s is the group's current deployment: nothing to roll back to", to.ID)}
	}
	field := "to"
	if req.To == "" {
		field = ""
	}
	im, err := a.deployableImage(c, p, to.Target, field, "cannot roll back to "+to.ID+": ")
	if err != nil {
		return nil, err
	}
	if im.SHA256 != to.SHA256 {
		return nil, &problem.Error{Kind: problem.Conflict, Code: "image_changed", Field: field,
			Detail: fmt.Sprintf("cannot roll back to %s: %s is now published with other content", to.ID, im.Path)}
	}
	d := device.Deployment{ID: ident.New(device.DeploymentIDPrefix, c.now), TenantID: c.tenant, ProductID: pid, GroupID: gid,
		Target: im.Path, SHA256: im.SHA256, CreatedAt: c.now, CreatedBy: c.principal.User.Name, Reverts: cur.ID}
	err = a.inTenant(c, func(tt store.TenantTx) error {
		now, err := tt.Deployments().Current(c.ctx, pid, gid)
		if err != nil {
			return storeProblem(err, "device_group", string(gid))
		}
		if now.ID != cur.ID { // another deployment came in between
			return problem.New(problem.Conflict, "deployment_changed", "the group's current deployment changed during the rollback; look again and retry")
		}
		if err := tt.Deployments().Create(c.ctx, d); err != nil {
			return storeProblem(err, "device_group", string(gid))
		}
		return c.audit(tt, "deployment.rollback", "deployment", d.ID,
			fmt.Sprintf("%s to group %s, reverting %s to %s", im.Path, gid, cur.ID, to.ID))
	})
	if err != nil {
		return nil, storeProblem(err, "device_group", string(gid))
	}
	a.fleet.Notify(c.tenant) // the group's devices should run the earlier image again
	return d, nil
}

func (a *API) listDeployments(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	pid, gid := product.ID(c.r.PathValue("product")), product.GroupID(c.r.PathValue("group"))
	var items []device.Deployment
	err = a.readTenant(c, func(tt store.TenantTx) error {
		if _, err := tt.Groups().Get(c.ctx, pid, gid); err != nil {
			return err
		}
		items, err = tt.Deployments().List(c.ctx, pid, gid, p)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "device_group", string(gid))
	}
	return listOf(items, p, func(d device.Deployment) string { return d.ID }), nil
}

// The device API: the device is c.device, its tenant c.tenant.

func (a *API) createNonce(c *call) (any, error) {
	req := c.body.(NonceRequest)
	// Per-device budget (issue 10, defect 6): the same answer for registered and unknown IDs.
	if err := a.fleet.AdmitNonce(req.DeviceID); err != nil {
		if th, ok := errors.AsType[*fleet.Throttled](err); ok {
			c.w.Header().Set("Retry-After", strconv.Itoa(th.RetryAfterSeconds()))
			return nil, problem.New(problem.Unavailable, "rate_limited", "too many nonce requests for this device; retry later")
		}
		return nil, problem.Wrap(err)
	}
	n, err := a.fleet.NewNonce(c.ctx, req.DeviceID)
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return n, nil
}

func (a *API) attest(c *call) (any, error) {
	body, err := c.rawBody()
	if err != nil {
		return nil, err
	}
	is, err := a.fleet.Attest(c.ctx, body)
	if errors.Is(err, fleet.ErrRefused) {
		// The reason is for support staff (the device's record, metrics, logs), not the
		// caller. A device whose signed, fresh evidence shows only out-of-date software gets
		// a recovery grant to fetch its update with.
		p := problem.New(problem.Forbidden, "attestation_refused", "refused")
		if r, ok := errors.AsType[*fleet.Refusal](err); ok && r.Recovery != nil {
			p.Extensions = map[string]any{"recovery": r.Recovery}
		}
		return nil, p
	}
	if errors.Is(err, fleet.ErrBusy) {
		// The attestation write queue is full (issue 15): come back, do not queue.
		p := problem.New(problem.Unavailable, "server_busy", "the server is attesting as many devices as it can; retry later")
		p.RetryAfter = fleet.BusyRetryAfter
		return nil, p
	}
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return is, nil
}

// getDeviceSelf reads the device anew: authentication may have used its row as read for
// an earlier request (fleet's device cache, up to fleet.DeviceCacheMaxAge old), and the
// device asks for its state as it is now (its update state, last seen).
func (a *API) getDeviceSelf(c *call) (any, error) {
	var d device.Device
	err := a.readTenant(c, func(tt store.TenantTx) error {
		var err error
		d, err = tt.Devices().Get(c.ctx, c.device.ID)
		return err
	})
	return d, storeProblem(err, "device", string(c.device.ID))
}

func (a *API) getDevelopmentCapability(c *call) (any, error) {
	data, err := a.fleet.DevelopmentCapability(*c.device)
	if errors.Is(err, fleet.ErrNoCapability) {
		return nil, problem.New(problem.NotFound, "no_capability", "this device has no development capability (moat device enable-development)")
	}
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return rawJSON(data), nil
}

func (a *API) waitForUpdates(c *call) (any, error) {
	req := c.body.(fleet.UpdatesWait)
	if a.parking != nil {
		return a.parkForUpdates(c, req.Since)
	}
	// The answer may take up to fleet.MaxWait: the connection's write deadline allows it.
	_ = http.NewResponseController(c.w).SetWriteDeadline(time.Now().Add(fleet.MaxWait + 10*time.Second))
	u, err := a.fleet.WaitUpdates(c.ctx, *c.device, req.Since)
	if err != nil {
		return nil, problem.From(err)
	}
	return u, nil
}
