package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// Device is a device's registry entry as the security service holds it.
type Device struct {
	ID           string            `json:"id"`
	PublicKeyPEM string            `json:"public_key_pem"`
	RegisteredAt time.Time         `json:"registered_at"`
	TenantID     string            `json:"tenant_id,omitempty"`
	ClaimedAt    *time.Time        `json:"claimed_at,omitempty"`
	ProductID    string            `json:"product_id,omitempty"`
	GroupID      string            `json:"device_group_id,omitempty"`
	Blocked      bool              `json:"blocked"`
	Development  bool              `json:"development"`
	Floors       map[string]uint32 `json:"floors"`
	Attestation  *Attestation      `json:"attestation,omitempty"`
	// Certificate is the device's current certificate: the only one the device API accepts.
	Certificate *CurrentCertificate `json:"certificate,omitempty"`
	// LastSeenAt is when the device last called the service (to within five minutes).
	LastSeenAt *time.Time `json:"last_seen_at,omitempty"`
	// UpdateState is the device's newest reported update step (UpdateAssigned, ...; ""
	// before its first report), UpdateStateAt when it happened by the device's clock.
	UpdateState   string     `json:"update_state,omitempty"`
	UpdateStateAt *time.Time `json:"update_state_at,omitempty"`
	Version       int64      `json:"version"`
}

// CurrentCertificate names a device's current certificate.
type CurrentCertificate struct {
	Serial   string    `json:"serial"`
	IssuedAt time.Time `json:"issued_at"`
	NotAfter time.Time `json:"not_after"`
}

// Attestation is the outcome of a device's last attestation; Refusal is empty on success.
type Attestation struct {
	At              time.Time     `json:"at"`
	Refusal         string        `json:"refusal,omitempty"`
	Detail          string        `json:"detail,omitempty"`
	Serial          string        `json:"certificate_serial,omitempty"`
	DevelopmentMode bool          `json:"development_mode"`
	Images          []Measurement `json:"images"`
}

// Measurement is one image a device attested.
type Measurement struct {
	Kind            string `json:"kind"`
	Path            string `json:"path"`
	SHA256          string `json:"sha256"`
	Version         string `json:"version"`
	SecurityVersion uint32 `json:"security_version"`
}

// DeviceRegister registers a device's identity public key (PEM, ECDSA P-256).
type DeviceRegister struct {
	PublicKeyPEM string `json:"public_key_pem"`
}

// DeviceClaim names the devices to claim.
type DeviceClaim struct {
	DeviceIDs []string `json:"device_ids"`
}

// Claimed lists the devices a claim put into the tenant.
type Claimed struct {
	Devices []Device `json:"devices"`
}

// DeviceUpdate changes a device; nil fields are left as they are. DeviceGroup is
// "PRODUCT/GROUP" by names, or "" for none.
type DeviceUpdate struct {
	DeviceGroup *string `json:"device_group,omitempty"`
	Blocked     *bool   `json:"blocked,omitempty"`
	Development *bool   `json:"development,omitempty"`
}

// DeviceCertificate is a certificate issued to a device, with what it attested.
type DeviceCertificate struct {
	Serial    string        `json:"serial"`
	DeviceID  string        `json:"device_id"`
	TenantID  string        `json:"tenant_id"`
	CAID      string        `json:"ca_id"`
	ProductID string        `json:"product_id"`
	GroupID   string        `json:"device_group_id"`
	Images    []Measurement `json:"images"`
	IssuedAt  time.Time     `json:"issued_at"`
	NotAfter  time.Time     `json:"not_after"`
}

// DeviceCA is one of a tenant's device CAs: pending (waiting for the platform root),
// active, or retired (trusted until RetireAt).
type DeviceCA struct {
	ID             string     `json:"id"`
	TenantID       string     `json:"tenant_id"`
	State          string     `json:"state"`
	CreatedAt      time.Time  `json:"created_at"`
	CSRPEM         string     `json:"csr_pem"`
	CertificatePEM string     `json:"certificate_pem,omitempty"`
	ActivatedAt    *time.Time `json:"activated_at,omitempty"`
	RetireAt       *time.Time `json:"retire_at,omitempty"`
	Version        int64      `json:"version"`
}

// PlatformCertificate is the platform root's X.509 certificate.
type PlatformCertificate struct {
	CertificatePEM string `json:"certificate_pem"`
}

// Deployment puts an app image on a device group.
type Deployment struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	ProductID string    `json:"product_id"`
	GroupID   string    `json:"device_group_id"`
	Target    string    `json:"target"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	// Reverts is set on a rollback: the deployment that was current and is reverted.
	Reverts string `json:"reverts,omitempty"`
	// Rollout is set on a staged deployment (rollout.go); nil: the whole group at once.
	Rollout *Rollout `json:"rollout,omitempty"`
	// IgnoreWindow: devices install at once, outside their group's maintenance window.
	IgnoreWindow bool `json:"ignore_window,omitempty"`
}

// DeploymentRollback names the earlier deployment to deploy again; empty To means the one
// before the current one.
type DeploymentRollback struct {
	To string `json:"to,omitempty"`
}

// DeploymentCreate names the app image (apps/<name>/<version>) to deploy, at once or in
// stages (Rollout).
type DeploymentCreate struct {
	Target string `json:"target"`
	// Rollout, when set, deploys in stages.
	Rollout *RolloutCreate `json:"rollout,omitempty"`
	// IgnoreWindow: install outside maintenance windows; only for an image whose security
	// version is above the current deployment's (else 422 ignore_window_refused).
	IgnoreWindow bool `json:"ignore_window,omitempty"`
}

// NonceRequest asks for an attestation nonce for a device.
type NonceRequest struct {
	DeviceID string `json:"device_id"`
}

// Nonce is a single-use attestation nonce.
type Nonce struct {
	Nonce     string    `json:"nonce"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Issued is a device certificate issued after attestation: the PEM chain (device
// certificate, then the tenant CA's), its serial and expiry.
type Issued struct {
	ChainPEM string    `json:"certificate_chain_pem"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// RegisterDevice registers a manufactured device's public key (platform operators).
func (c *Client) RegisterDevice(ctx context.Context, req DeviceRegister) (Device, error) {
	var out Device
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"platform", "devices"}, body: req}, &out)
	return out, err
}

// PutPlatformCertificate uploads the platform root's self-signed X.509 certificate (PEM).
func (c *Client) PutPlatformCertificate(ctx context.Context, certPEM []byte) (PlatformCertificate, error) {
	var out PlatformCertificate
	err := c.do(ctx, request{method: http.MethodPut, path: []string{"platform", "ca-certificate"}, raw: certPEM, rawType: pemType}, &out)
	return out, err
}

// ListPendingDeviceCAs lists every tenant's device CAs waiting for the platform root
// (platform operators).
func (c *Client) ListPendingDeviceCAs(ctx context.Context, opts ListOptions) (Page[DeviceCA], error) {
	var out Page[DeviceCA]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"platform", "device-cas"}, query: listQuery(opts)}, &out)
	return out, err
}

// PutDeviceCACertificate uploads the certificate the platform root issued for a pending
// tenant device CA (PEM); the CA becomes active.
func (c *Client) PutDeviceCACertificate(ctx context.Context, tenant, ca string, certPEM []byte) (DeviceCA, error) {
	var out DeviceCA
	err := c.do(ctx, request{method: http.MethodPut, path: []string{"tenants", tenant, "device-cas", ca, "certificate"}, raw: certPEM, rawType: pemType}, &out)
	return out, err
}

// ListDeviceCAs lists the tenant's device CAs.
func (c *Client) ListDeviceCAs(ctx context.Context, tenant string, opts ListOptions) (Page[DeviceCA], error) {
	var out Page[DeviceCA]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "device-cas"}, query: listQuery(opts)}, &out)
	return out, err
}

// RotateDeviceCA starts a device CA rotation: a new pending CA.
func (c *Client) RotateDeviceCA(ctx context.Context, tenant string) (DeviceCA, error) {
	var out DeviceCA
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants", tenant, "device-cas"}}, &out)
	return out, err
}

// GetDeviceCAChain returns the PEM chain a tenant's cloud trusts its devices with.
func (c *Client) GetDeviceCAChain(ctx context.Context, tenant string) ([]byte, error) {
	var out []byte
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "ca-certificate-chain"}}, &out)
	return out, err
}

// ClaimDevices claims registered devices into the tenant.
func (c *Client) ClaimDevices(ctx context.Context, tenant string, req DeviceClaim) (Claimed, error) {
	var out Claimed
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants", tenant, "device-claims"}, body: req}, &out)
	return out, err
}

// ListDevices lists the tenant's devices; opts.Product (a product name) selects one product's.
func (c *Client) ListDevices(ctx context.Context, tenant string, opts ListOptions) (Page[Device], error) {
	var out Page[Device]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "devices"}, query: listQuery(opts)}, &out)
	return out, err
}

// GetDevice returns one of the tenant's devices.
func (c *Client) GetDevice(ctx context.Context, tenant, id string) (Device, error) {
	var out Device
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "devices", id}}, &out)
	return out, err
}

// UpdateDevice changes a device read at ifMatchVersion.
func (c *Client) UpdateDevice(ctx context.Context, tenant, id string, ifMatchVersion int64, upd DeviceUpdate) (Device, error) {
	var out Device
	err := c.do(ctx, request{method: http.MethodPatch, path: []string{"tenants", tenant, "devices", id}, body: upd, ifMatch: ifMatchVersion}, &out)
	return out, err
}

// ListDeviceCertificates lists the certificates issued to a device, newest first.
func (c *Client) ListDeviceCertificates(ctx context.Context, tenant, id string, opts ListOptions) (Page[DeviceCertificate], error) {
	var out Page[DeviceCertificate]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "devices", id, "certificates"}, query: listQuery(opts)}, &out)
	return out, err
}

// ListDeployments lists a device group's deployments, current first.
func (c *Client) ListDeployments(ctx context.Context, tenant, product, group string, opts ListOptions) (Page[Deployment], error) {
	var out Page[Deployment]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "products", product, "device-groups", group, "deployments"}, query: listQuery(opts)}, &out)
	return out, err
}

// CreateDeployment deploys an app image to a device group.
func (c *Client) CreateDeployment(ctx context.Context, tenant, product, group string, req DeploymentCreate) (Deployment, error) {
	var out Deployment
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants", tenant, "products", product, "device-groups", group, "deployments"}, body: req}, &out)
	return out, err
}

// GetDeployment returns one of a device group's deployments.
func (c *Client) GetDeployment(ctx context.Context, tenant, product, group, id string) (Deployment, error) {
	var out Deployment
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "products", product, "device-groups", group, "deployments", id}}, &out)
	return out, err
}

// RollbackDeployment deploys an earlier deployment's target to the group again; the new
// deployment's Reverts names the deployment it replaced.
func (c *Client) RollbackDeployment(ctx context.Context, tenant, product, group string, req DeploymentRollback) (Deployment, error) {
	var out Deployment
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants", tenant, "products", product, "device-groups", group, "deployments", "rollback"}, body: req}, &out)
	return out, err
}

// The device API. A device calls it with an http.Client whose TLS configuration presents
// its certificate (WithHTTPClient); attestation needs no certificate.

// CreateAttestationNonce asks for a single-use attestation nonce for the device.
func (c *Client) CreateAttestationNonce(ctx context.Context, req NonceRequest) (Nonce, error) {
	var out Nonce
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"device", "attestation", "nonces"}, body: req}, &out)
	return out, err
}

// Attest presents signed evidence (internal format: docs/attestation-evidence.md) and
// returns the issued certificate; a refusal is an *Error with status 403.
func (c *Client) Attest(ctx context.Context, evidence []byte) (Issued, error) {
	var out Issued
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"device", "attestations"}, raw: evidence}, &out)
	return out, err
}

// GetDeviceSelf returns what the security service holds about the calling device.
func (c *Client) GetDeviceSelf(ctx context.Context) (Device, error) {
	var out Device
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"device", "me"}}, &out)
	return out, err
}

// GetAssignment returns the calling device's signed update assignment, byte for byte.
func (c *Client) GetAssignment(ctx context.Context) ([]byte, error) {
	var out []byte
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"device", "assignment"}}, &out)
	return out, err
}

// GetAssignmentIfChanged is GetAssignment for a device that holds an assignment already
// (held: its bytes as served, nil for none): it sends the held one's AssignmentETag as
// If-None-Match, and when the server answers 304 Not Modified it returns (nil, false,
// nil): the held one is current. The caller verifies what it acts on either way, the held
// bytes included (their expiry above all).
func (c *Client) GetAssignmentIfChanged(ctx context.Context, held []byte) ([]byte, bool, error) {
	req := request{method: http.MethodGet, path: []string{"device", "assignment"}}
	if held != nil {
		req.ifNoneMatch = AssignmentETag(held)
	}
	var out []byte
	err := c.do(ctx, req, &out)
	if errors.Is(err, errNotModified) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// AssignmentETag is the strong ETag the server gives a signed assignment: the first 128
// bits of the SHA-256 of its bytes in hex, quoted.
func AssignmentETag(signed []byte) string {
	sum := sha256.Sum256(signed)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// errNotModified: the server answered 304 to a conditional request.
var errNotModified = errors.New("not modified")

// GetDeviceTUFFile returns a file of the calling device's tenant TUF view.
func (c *Client) GetDeviceTUFFile(ctx context.Context, name string) ([]byte, error) {
	var out []byte
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"device", "tuf", "metadata", name}}, &out)
	return out, err
}

// GetDeviceTarget streams a target of the calling device's tenant view into w.
func (c *Client) GetDeviceTarget(ctx context.Context, target string, w io.Writer) (int64, error) {
	var n int64
	path := append([]string{"device", "tuf", "targets"}, strings.Split(target, "/")...)
	err := c.do(ctx, request{method: http.MethodGet, path: path, sink: w}, &n)
	return n, err
}

// GetDevelopmentCapability returns the calling device's development capability (a signed
// document bound to the device), byte for byte; a 404 *Error when it has none.
func (c *Client) GetDevelopmentCapability(ctx context.Context) ([]byte, error) {
	var out []byte
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"device", "capabilities", "development"}}, &out)
	return out, err
}

// UpdatesWait asks to wait for a change; Since is the generation last seen.
type UpdatesWait struct {
	Since string `json:"since"`
}

// Updates is the current generation of a device's assignment inputs; Changed says it
// differs from the one waited on.
type Updates struct {
	Generation string `json:"generation"`
	Changed    bool   `json:"changed"`
}

// WaitForUpdates long-polls (up to 50 s) for a change of what the calling device should run.
func (c *Client) WaitForUpdates(ctx context.Context, req UpdatesWait) (Updates, error) {
	var out Updates
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"device", "updates"}, body: req}, &out)
	return out, err
}
