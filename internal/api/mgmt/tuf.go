package mgmt

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/tuf"
)

// rawJSON is a response served byte for byte (signed metadata must not be re-encoded).
type rawJSON []byte

// OnlineKey is the server's online public key.
type OnlineKey struct {
	PublicKeyPEM string `json:"public_key_pem"`
	// TUFKeyID is the key's ID as root.json names it for snapshot and timestamp.
	TUFKeyID string `json:"tuf_key_id"`
}

// TUFVersion is the version of uploaded metadata.
type TUFVersion struct {
	Version int64 `json:"version"`
}

// Delegation is what the platform operator signs into a tenant's targets.json: the keys the
// tenant has registered and not revoked. Only public keys: nothing here is secret.
type Delegation struct {
	TenantID tenant.ID `json:"tenant_id"`
	// TargetsVersion is the version of the tenant's current targets.json (0: none yet).
	TargetsVersion int64           `json:"targets_version"`
	Keys           []DelegationKey `json:"keys"`
	// CurrentTargets is the tenant's current targets.json as served (empty when none), so
	// that the operator's next signature keeps its OS images after verifying it.
	CurrentTargets string `json:"current_targets,omitempty"`
}

// DelegationKey is one key to delegate to.
type DelegationKey struct {
	Name         string `json:"name"`
	TUFKeyID     string `json:"tuf_key_id"`
	PublicKeyPEM string `json:"public_key_pem"`
}

// rawBody reads a bounded application/json body as bytes.
func (c *call) rawBody() ([]byte, error) {
	mt, _, err := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, problem.New(problem.Unsupported, "unsupported_media_type", "the body must be application/json (signed TUF metadata)")
	}
	b, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, store.MaxTUFFileBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, problem.New(problem.TooLarge, "body_too_large", "the body must be at most %d bytes", store.MaxTUFFileBytes)
		}
		return nil, problem.New(problem.Invalid, "body_unreadable", "the body could not be read")
	}
	if len(b) == 0 {
		return nil, problem.New(problem.Invalid, "body_required", "a signed TUF metadata document is required")
	}
	return b, nil
}

// tufProblem maps the repository's errors to problems a signer can act on.
func tufProblem(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, repo.ErrNotInitialized):
		return &problem.Error{Kind: problem.Conflict, Code: "repository_not_initialized", Detail: "the platform has not uploaded its root.json yet (moat platform init)", Err: err}
	case errors.Is(err, repo.ErrWrongOnlineKey):
		return &problem.Error{Kind: problem.Invalid, Code: "wrong_online_key", Detail: "the root must name this server's online key (GET /api/v1/platform/online-key) for snapshot and timestamp", Err: err}
	case errors.Is(err, repo.ErrNoActiveKey):
		return &problem.Error{Kind: problem.Invalid, Code: "not_signed_by_active_key", Detail: "apps.json must be signed by one of the tenant's active registered signing keys", Err: err}
	case errors.Is(err, repo.ErrBadTarget):
		return &problem.Error{Kind: problem.Invalid, Code: "bad_target", Detail: "every target must be an image package the tenant uploaded, at apps/<name>/<version> as its manifest says, for one of the tenant's products", Err: err}
	case errors.Is(err, tuf.ErrSignature):
		return &problem.Error{Kind: problem.Invalid, Code: "bad_signature", Detail: "the metadata is not signed by a threshold of the keys trusted for its role", Err: err}
	case errors.Is(err, tuf.ErrVersion):
		return &problem.Error{Kind: problem.Conflict, Code: "version_not_next", Detail: "the metadata version must advance (root: exactly the next version)", Err: err}
	case errors.Is(err, tuf.ErrExpired):
		return &problem.Error{Kind: problem.Invalid, Code: "metadata_expired", Detail: "the metadata has expired; sign it with a later expiry", Err: err}
	case errors.Is(err, tuf.ErrPath):
		return &problem.Error{Kind: problem.Invalid, Code: "target_path_not_allowed", Detail: "a target path is outside its role's namespace or not canonical", Err: err}
	case errors.Is(err, tuf.ErrMalformed):
		return &problem.Error{Kind: problem.Invalid, Code: "malformed_metadata", Detail: "the body is not TUF metadata of the expected role", Err: err}
	case errors.Is(err, store.ErrConflict):
		return &problem.Error{Kind: problem.Conflict, Code: "concurrent_publish", Detail: "another publish changed the repository at the same time; retry", Err: err}
	}
	return problem.From(err)
}

func (a *API) getOnlineKey(c *call) (any, error) {
	pemText, err := keys.EncodePublicPEM(a.repo.OnlineKey())
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return OnlineKey{PublicKeyPEM: string(pemText), TUFKeyID: keys.KeyID(a.repo.OnlineKey())}, nil
}

func (a *API) putPlatformRoot(c *call) (any, error) {
	body, err := c.rawBody()
	if err != nil {
		return nil, err
	}
	v, err := a.repo.PutRoot(c.ctx, body, func(tx store.Tx, v int64) error {
		return c.auditPlatform(tx, "tuf.root.put", "tuf_root", strconv.FormatInt(v, 10), "root.json version "+strconv.FormatInt(v, 10))
	})
	if err != nil {
		return nil, tufProblem(err)
	}
	a.log.InfoContext(c.ctx, "platform root uploaded", "request_id", c.requestID, "user_id", c.principal.User.ID, "version", v)
	return TUFVersion{Version: v}, nil
}

// putTenantTargets is the platform operator's upload of a tenant's top-level targets; the
// operator needs no role in the tenant, only the tenant must exist.
func (a *API) putTenantTargets(c *call) (any, error) {
	t := tenant.ID(c.r.PathValue("tenant"))
	if !ident.Valid(tenant.IDPrefix, string(t)) {
		return nil, problem.New(problem.NotFound, "tenant_not_found", "no tenant %s", truncate(string(t)))
	}
	err := a.store.InReadTx(c.ctx, func(tx store.Tx) error {
		_, err := tx.Tenants().Get(c.ctx, t)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "tenant", string(t))
	}
	body, err := c.rawBody()
	if err != nil {
		return nil, err
	}
	c.tenant = t
	v, err := a.repo.PutTargets(c.ctx, t, body, func(tt store.TenantTx, v int64) error {
		return c.audit(tt, "tuf.targets.put", "tuf_targets", string(t), "targets.json version "+strconv.FormatInt(v, 10))
	})
	if err != nil {
		return nil, tufProblem(err)
	}
	a.fleet.Notify(t) // OS images published or revoked for the tenant's devices
	return TUFVersion{Version: v}, nil
}

func (a *API) putTenantApps(c *call) (any, error) {
	body, err := c.rawBody()
	if err != nil {
		return nil, err
	}
	v, err := a.repo.PutApps(c.ctx, c.tenant, body, func(tt store.TenantTx, v int64) error {
		return c.audit(tt, "tuf.apps.put", "tuf_apps", string(c.tenant), "apps.json version "+strconv.FormatInt(v, 10))
	})
	if err != nil {
		return nil, tufProblem(err)
	}
	a.fleet.Notify(c.tenant) // apps published or revoked
	return TUFVersion{Version: v}, nil
}

func (a *API) getTenantTUFFile(c *call) (any, error) {
	name := c.r.PathValue("file")
	data, err := a.repo.File(c.ctx, c.tenant, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, problem.New(problem.NotFound, "tuf_file_not_found", "no TUF file %s in this tenant's repository", truncate(name))
	}
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return rawJSON(data), nil
}

// getTenantDelegation lets the platform operator, who holds no role in the tenant, see the
// public keys its next targets.json delegates to (and nothing else of the tenant).
func (a *API) getTenantDelegation(c *call) (any, error) {
	t := tenant.ID(c.r.PathValue("tenant"))
	if !ident.Valid(tenant.IDPrefix, string(t)) {
		return nil, problem.New(problem.NotFound, "tenant_not_found", "no tenant %s", truncate(string(t)))
	}
	out := Delegation{TenantID: t, Keys: []DelegationKey{}}
	err := a.store.InReadTx(c.ctx, func(tx store.Tx) error {
		if _, err := tx.Tenants().Get(c.ctx, t); err != nil {
			return err
		}
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		page := store.Page{Limit: 1000}
		for {
			ks, err := tt.SigningKeys().List(c.ctx, page)
			if err != nil {
				return err
			}
			for _, k := range ks {
				if k.Active() {
					out.Keys = append(out.Keys, DelegationKey{Name: k.Name, TUFKeyID: k.TUFKeyID, PublicKeyPEM: k.PublicKeyPEM})
				}
			}
			if len(ks) < page.Limit {
				return nil
			}
			page.After = string(ks[len(ks)-1].ID)
		}
	})
	if err != nil {
		return nil, storeProblem(err, "tenant", string(t))
	}
	v, err := a.repo.TargetsVersion(c.ctx, t)
	if err != nil {
		return nil, tufProblem(err)
	}
	out.TargetsVersion = v
	cur, err := a.repo.CurrentTargets(c.ctx, t)
	if err != nil {
		return nil, tufProblem(err)
	}
	out.CurrentTargets = string(cur)
	return out, nil
}

// alreadyWritten is returned by a handler that wrote its response itself (a streamed blob).
type alreadyWritten struct{}

// BlobInfo is an uploaded blob.
type BlobInfo struct {
	Digest string `json:"digest"` // "sha256:<hex>"
	Size   int64  `json:"size"`
}

// MaxBlobBytes bounds one uploaded image package.
const MaxBlobBytes = 2 << 30

// uploadPlatformBlob streams an OS image package from the platform operator into the blob
// store; a tenant's devices may fetch it once that tenant's targets.json names it.
func (a *API) uploadPlatformBlob(c *call) (any, error) {
	out, err := streamUpload(c, a.repo.AddPlatformBlob)
	if err != nil {
		return nil, err
	}
	bi := out.(BlobInfo)
	err = a.store.InTx(c.ctx, func(tx store.Tx) error {
		return c.auditPlatform(tx, "blob.upload", "blob", bi.Digest, "OS package of "+strconv.FormatInt(bi.Size, 10)+" bytes")
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return bi, nil
}

// uploadBlob streams an image package into the blob store for the tenant.
func (a *API) uploadBlob(c *call) (any, error) {
	return streamUpload(c, func(ctx context.Context, r io.Reader, max int64) (blob.Info, error) {
		return a.repo.AddBlob(ctx, c.tenant, r, max)
	})
}

// streamUpload streams an application/octet-stream body into put; nothing is held in
// memory, and a body over MaxBlobBytes stores nothing.
func streamUpload(c *call, put func(context.Context, io.Reader, int64) (blob.Info, error)) (any, error) {
	mt, _, err := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if err != nil || mt != "application/octet-stream" {
		return nil, problem.New(problem.Unsupported, "unsupported_media_type", "the body must be application/octet-stream")
	}
	// A large package on a slow link takes longer than the server's default read timeout.
	_ = http.NewResponseController(c.w).SetReadDeadline(time.Now().Add(time.Hour))
	info, err := put(c.ctx, c.r.Body, MaxBlobBytes)
	switch {
	case errors.Is(err, blob.ErrTooLarge):
		return nil, problem.New(problem.TooLarge, "body_too_large", "an image package must be at most %d bytes", int64(MaxBlobBytes))
	case err != nil:
		return nil, problem.Wrap(err)
	}
	return BlobInfo{Digest: info.Digest.String(), Size: info.Size}, nil
}

// getTenantTarget serves a target by the name a TUF client asks for with consistent
// snapshots: "<dir>/<sha256 hex>.<base name>". Only the tenant's own uploads are served.
func (a *API) getTenantTarget(c *call) (any, error) {
	name := c.r.PathValue("target")
	base := name[strings.LastIndex(name, "/")+1:]
	hexsum, _, ok := strings.Cut(base, ".")
	d, err := blob.ParseDigest(hexsum)
	if !ok || err != nil {
		return nil, problem.New(problem.NotFound, "target_not_found", "no target %s", truncate(name))
	}
	// A large package on a slow link takes longer than the server's default write timeout;
	// the client's own stall and overall deadlines bound it (blob.Fetch).
	_ = http.NewResponseController(c.w).SetWriteDeadline(time.Now().Add(time.Hour))
	if err := a.repo.ServeBlob(c.w, c.r, c.tenant, d); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, problem.New(problem.NotFound, "target_not_found", "no target %s", truncate(name))
		}
		return nil, problem.Wrap(err)
	}
	return alreadyWritten{}, nil
}
