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

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/image"
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
// store; a tenant's devices may fetch it once that tenant's targets.json names it. The
// upload is audited in the transaction that records it.
func (a *API) uploadPlatformBlob(c *call) (any, error) {
	u, err := startUpload(c)
	if err != nil {
		return nil, err
	}
	info, err := a.repo.UploadPlatformBlob(c.ctx, u, func(tx store.Tx, info blob.Info) error {
		return c.auditPlatform(tx, "blob.upload", "blob", info.Digest.String(), "OS package of "+strconv.FormatInt(info.Size, 10)+" bytes")
	})
	if err != nil {
		return nil, uploadProblem(err)
	}
	return BlobInfo{Digest: info.Digest.String(), Size: info.Size}, nil
}

// uploadBlob streams an app image package into the blob store for the tenant, within its
// storage quota, and audits it in the tenant's log (issue 10, defect 3; attacked by
// TestBlobs_RejectsRandomBytes, TestBlobs_RejectsOverQuota and TestBlobs_UploadIsAudited).
func (a *API) uploadBlob(c *call) (any, error) {
	u, err := startUpload(c)
	if err != nil {
		return nil, err
	}
	info, err := a.repo.UploadBlob(c.ctx, c.tenant, u, func(tt store.TenantTx, info blob.Info) error {
		return c.audit(tt, "blob.upload", "blob", info.Digest.String(), "image package of "+strconv.FormatInt(info.Size, 10)+" bytes")
	})
	if err != nil {
		return nil, uploadProblem(err)
	}
	return BlobInfo{Digest: info.Digest.String(), Size: info.Size}, nil
}

// startUpload checks the media type and readies the streamed body: nothing is held in
// memory, and the repository reads it as an image package while storing it.
func startUpload(c *call) (repo.Upload, error) {
	mt, _, err := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if err != nil || mt != "application/octet-stream" {
		return repo.Upload{}, problem.New(problem.Unsupported, "unsupported_media_type", "the body must be application/octet-stream")
	}
	// A large package on a slow link takes longer than the server's default read timeout.
	_ = http.NewResponseController(c.w).SetReadDeadline(time.Now().Add(time.Hour))
	return repo.Upload{Body: bodyReader{c.r.Body}, Size: c.r.ContentLength, MaxBytes: MaxBlobBytes}, nil
}

// errBodyRead marks a failure to read the request body (the client went away), so that it
// is the client's problem, not the server's.
var errBodyRead = errors.New("read request body")

type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: %w", errBodyRead, err)
	}
	return n, err
}

// imageDetails says what is wrong with an upload that is not an image package.
var imageDetails = []struct {
	err    error
	detail string
}{
	{image.ErrBadMagic, "the body does not start with MOATIMG: it is not a moat image package (build one with moat image package)"},
	{image.ErrUnsupportedVersion, "the package names an image format version this server does not know"},
	{image.ErrTruncated, "the package ends before its header, manifest or payload does"},
	{image.ErrTrailingData, "bytes follow the package's payload"},
	{image.ErrPayloadMismatch, "the payload's SHA-256 differs from the one its manifest declares"},
	{image.ErrNotCanonical, "the package's manifest is not its canonical JSON encoding"},
	{image.ErrInvalidManifest, "the package's manifest is invalid"},
	{image.ErrTooLarge, "the package's manifest is larger than 64 KiB"},
}

// uploadProblem maps the repository's upload errors to problems the uploader can act on.
func uploadProblem(err error) error {
	if qe, ok := errors.AsType[*repo.QuotaError](err); ok {
		size := "this package"
		if qe.SizeBytes >= 0 {
			size += " (" + strconv.FormatInt(qe.SizeBytes, 10) + " bytes)"
		}
		return &problem.Error{Kind: problem.TooLarge, Code: "storage_quota_exceeded", Err: err,
			Detail: fmt.Sprintf("the tenant's uploads take %d of its %d-byte storage quota and %s does not fit; uploads that no apps.json names are removed %d hours after upload, or the platform operator can raise the quota",
				qe.UsedBytes, qe.QuotaBytes, size, int(repo.BlobGrace.Hours()))}
	}
	switch {
	case errors.Is(err, repo.ErrWrongKind):
		return &problem.Error{Kind: problem.Invalid, Code: "wrong_image_kind", Err: err,
			Detail: "tenants upload application packages here; OS packages are the platform operator's (POST /api/v1/platform/blobs), which takes only OS packages"}
	case errors.Is(err, repo.ErrNotImage):
		detail := "the body is not a valid moat image package"
		for _, d := range imageDetails {
			if errors.Is(err, d.err) {
				detail = d.detail
				break
			}
		}
		return &problem.Error{Kind: problem.Invalid, Code: "not_an_image_package", Detail: detail + "; nothing was stored", Err: err}
	case errors.Is(err, blob.ErrTooLarge):
		return &problem.Error{Kind: problem.TooLarge, Code: "body_too_large", Detail: fmt.Sprintf("an image package must be at most %d bytes", int64(MaxBlobBytes)), Err: err}
	case errors.Is(err, repo.ErrCollected):
		return &problem.Error{Kind: problem.Unavailable, Code: "upload_collected", Detail: "the content was being removed as unused while it was uploaded; upload it again", Err: err}
	case errors.Is(err, errBodyRead):
		return &problem.Error{Kind: problem.Invalid, Code: "body_unreadable", Detail: "the body could not be read", Err: err}
	}
	return problem.Wrap(err)
}

// getTenantStorage shows what the tenant's uploads take against its storage quota.
func (a *API) getTenantStorage(c *call) (any, error) {
	st, err := a.repo.Storage(c.ctx, c.tenant)
	if err != nil {
		return nil, storeProblem(err, "tenant", string(c.tenant))
	}
	return st, nil
}

// putTenantStorageQuota sets a tenant's storage quota: the platform operator's, who holds
// no role in the tenant; a tenant's own administrators cannot raise it (attacked by
// TestBlobs_QuotaIsTheOperators).
func (a *API) putTenantStorageQuota(c *call) (any, error) {
	t := tenant.ID(c.r.PathValue("tenant"))
	if !ident.Valid(tenant.IDPrefix, string(t)) {
		return nil, problem.New(problem.NotFound, "tenant_not_found", "no tenant %s", truncate(string(t)))
	}
	req := c.body.(tenant.StorageQuota)
	detail := "storage quota " + strconv.FormatInt(*req.StorageQuotaBytes, 10) + " bytes"
	st, err := a.repo.SetStorageQuota(c.ctx, t, req.StorageQuotaBytes, func(tx store.Tx) error {
		if err := c.auditPlatform(tx, "tenant.storage_quota.put", "tenant", string(t), detail); err != nil {
			return err
		}
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		return c.audit(tt, "tenant.storage_quota.put", "tenant", string(t), detail)
	})
	if err != nil {
		return nil, storeProblem(err, "tenant", string(t))
	}
	c.tenant = t
	return st, nil
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
