// Package device defines the security service's records about devices: the registry entry
// a device gets when the platform registers its identity key, the tenant that claimed it,
// its device group, its anti-rollback floors and its attestation outcome; the per-tenant
// device certificate authorities; the certificates issued after attestation; and the
// deployments that say which application image a device group runs.
//
// Pure types and validation; safe for concurrent use.
package device

import (
	"time"

	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/updstate"
)

// ID names a device: identity.DeviceID, the hex SHA-256 of its public key's PKIX DER.
type ID = identity.DeviceID

// Device is the registry entry of one device.
type Device struct {
	ID ID `json:"id"`
	// PublicKeyPEM is the device's identity public key (PKIX, PEM).
	PublicKeyPEM string    `json:"public_key_pem"`
	RegisteredAt time.Time `json:"registered_at"`
	// TenantID is the tenant that claimed the device; empty until claimed. A claim is final.
	TenantID  tenant.ID  `json:"tenant_id,omitempty"`
	ClaimedAt *time.Time `json:"claimed_at,omitempty"`
	// ProductID and GroupID place the device in one of its tenant's device groups; both
	// empty or both set.
	ProductID product.ID      `json:"product_id,omitempty"`
	GroupID   product.GroupID `json:"device_group_id,omitempty"`
	Blocked   bool            `json:"blocked"`
	// Development is the development capability: the device may run development images
	// and report development mode.
	Development bool `json:"development"`
	// Floors are the anti-rollback floors per image component ("os/<name>" or
	// "apps/<name>"): the highest security version the device attested. Attestation of a
	// lower one is refused. They only rise.
	Floors map[string]uint32 `json:"floors"`
	// Attestation is the outcome of the device's last attestation, successful or not.
	Attestation *Attestation `json:"attestation,omitempty"`
	// Certificate is the certificate of the device's latest successful attestation: the
	// only one the device API accepts (a superseded one presented later is a second
	// instance of the identity). Nil when the latest fresh attestation was refused.
	Certificate *Current `json:"certificate,omitempty"`
	// LastSeenAt is when the device last called the device API with its certificate or
	// attested, to within a few minutes (the service writes it coarsely); nil before.
	LastSeenAt *time.Time `json:"last_seen_at,omitempty"`
	// UpdateState is the device's newest reported update step ("" before its first
	// report), UpdateStateAt when it happened by the device's clock (updstate).
	UpdateState   updstate.State `json:"update_state,omitempty"`
	UpdateStateAt *time.Time     `json:"update_state_at,omitempty"`
	Version       int64          `json:"version"`
}

// Current names a device's current certificate.
type Current struct {
	Serial   string    `json:"serial"`
	IssuedAt time.Time `json:"issued_at"`
	NotAfter time.Time `json:"not_after"`
}

// Attestation is what support staff see of a device's last attestation.
type Attestation struct {
	At time.Time `json:"at"`
	// Refusal is empty when the device got a certificate, else the reason it did not.
	Refusal string `json:"refusal,omitempty"`
	// Detail explains a refusal (which image, which floor); empty on success.
	Detail string `json:"detail,omitempty"`
	// Serial is the certificate issued on success.
	Serial          string        `json:"certificate_serial,omitempty"`
	DevelopmentMode bool          `json:"development_mode"`
	Images          []Measurement `json:"images"`
}

// Measurement is one attested image, as the device measured it.
type Measurement struct {
	Kind            string `json:"kind"`
	Path            string `json:"path"`
	SHA256          string `json:"sha256"`
	Version         string `json:"version"`
	SecurityVersion uint32 `json:"security_version"`
}

// Refusal reasons, in the order the attestation checks run. They are what support staff
// and metrics see; an unauthenticated caller sees only "refused".
const (
	RefusedUnknownDevice   = "unknown_device"
	RefusedUnclaimed       = "unclaimed"
	RefusedBlocked         = "blocked"
	RefusedBadSignature    = "bad_signature"
	RefusedNonce           = "stale_or_replayed_nonce"
	RefusedUnknownImage    = "unknown_image"
	RefusedRevokedImage    = "revoked_image"
	RefusedBelowFloor      = "below_floor"
	RefusedDevelopmentMode = "development_mode_not_allowed"
	RefusedNoGroup         = "no_device_group"
	RefusedNoCA            = "no_active_ca"
)

// RefusalReasons lists every refusal reason (metrics are initialised with them).
var RefusalReasons = []string{
	RefusedUnknownDevice, RefusedUnclaimed, RefusedBlocked, RefusedBadSignature, RefusedNonce,
	RefusedUnknownImage, RefusedRevokedImage, RefusedBelowFloor, RefusedDevelopmentMode,
	RefusedNoGroup, RefusedNoCA,
}

// Filter selects devices of a tenant; empty fields select all.
type Filter struct {
	ProductID product.ID
	GroupID   product.GroupID
	// OSTarget and AppTarget select the devices that run this target path by their last
	// successful attestation (see Running); NoTarget selects those that measured no such
	// image then, or never attested successfully.
	OSTarget  string
	AppTarget string
	// Outcome selects by the last attestation: OutcomeNever, OutcomeOK, OutcomeRefused (any
	// reason) or one refusal reason.
	Outcome string
	// AttestedBefore, when not zero, selects the devices whose last attestation, whatever
	// its outcome, was before it (devices that never attested are OutcomeNever).
	AttestedBefore time.Time
	// State selects by fleet state (StateNever ... StatePending, see Classify) against
	// Should, what each group's devices should run: only devices of the groups Should names
	// are selected. A State without Should is an error.
	State  string
	Should map[product.GroupID]Should
}

// NoTarget in Filter.OSTarget or Filter.AppTarget selects devices that run no known image
// of that kind. A target path always holds a "/", so it cannot be one.
const NoTarget = "none"

// Outcomes of the last attestation that Filter.Outcome selects besides a refusal reason.
const (
	OutcomeNever   = "never"   // never attested
	OutcomeOK      = "ok"      // the last attestation got a certificate
	OutcomeRefused = "refused" // the last attestation was refused, for any reason
)

// Running is what a device runs by its last successful attestation: the target paths and
// versions of the OS and application images it measured then ("" for a kind it did not
// measure). A refused attestation does not change it: its images are what the device
// claimed, not what was accepted. The store keeps it in indexed columns for fleet queries.
type Running struct {
	OSTarget   string `json:"os_target"`
	OSVersion  string `json:"os_version"`
	AppTarget  string `json:"app_target"`
	AppVersion string `json:"app_version"`
}

// Running returns what a successful attestation shows the device runs; ok is false for a
// nil or refused attestation, which leaves what the device runs unknown or unchanged.
func (a *Attestation) Running() (r Running, ok bool) {
	if a == nil || a.Refusal != "" {
		return Running{}, false
	}
	for _, m := range a.Images {
		switch m.Kind {
		case attest.KindOS:
			r.OSTarget, r.OSVersion = m.Path, m.Version
		case attest.KindApp:
			r.AppTarget, r.AppVersion = m.Path, m.Version
		}
	}
	return r, true
}

// MaxClaim bounds the devices of one claim request (so that it fits the 64 KiB body limit).
const MaxClaim = 500

// Claim is the body of a claim request.
type Claim struct {
	DeviceIDs []ID `json:"device_ids"`
}

// Validate checks the request's shape.
func (c Claim) Validate() error {
	var v problem.Validation
	switch {
	case len(c.DeviceIDs) == 0:
		v.Add("device_ids", "device_ids_required", "device_ids must name at least one device")
	case len(c.DeviceIDs) > MaxClaim:
		v.Add("device_ids", "too_many_devices", "device_ids may name at most %d devices", MaxClaim)
	}
	for _, id := range c.DeviceIDs {
		if !identity.ValidID(string(id)) {
			v.Add("device_ids", "invalid_device_id", "%q is not a device ID (64 lower-case hex digits)", clip(string(id)))
			break
		}
	}
	return v.Err()
}

// Register is the body of a platform registration request.
type Register struct {
	PublicKeyPEM string `json:"public_key_pem"`
}

// MaxPublicKeyPEMBytes bounds a device public key's PEM text.
const MaxPublicKeyPEMBytes = 4096

// Validate checks the request's shape; the key itself is parsed by the caller.
func (r Register) Validate() error {
	var v problem.Validation
	switch {
	case r.PublicKeyPEM == "":
		v.Add("public_key_pem", "public_key_required", "public_key_pem must hold a PEM public key")
	case len(r.PublicKeyPEM) > MaxPublicKeyPEMBytes:
		v.Add("public_key_pem", "public_key_too_long", "public_key_pem must be at most %d bytes", MaxPublicKeyPEMBytes)
	}
	return v.Err()
}

// Update changes a device's group or state; absent fields are left as they are.
type Update struct {
	// Group is "<product name>/<group name>", or "" to take the device out of its group.
	Group       *string `json:"device_group,omitempty"`
	Blocked     *bool   `json:"blocked,omitempty"`
	Development *bool   `json:"development,omitempty"`
}

// Validate checks the request's shape.
func (u Update) Validate() error {
	var v problem.Validation
	if u.Group == nil && u.Blocked == nil && u.Development == nil {
		v.Add("", "nothing_to_update", "name at least one of device_group, blocked, development")
	}
	if u.Group != nil && *u.Group != "" && (len(*u.Group) < 3 || len(*u.Group) > 2*64+1) {
		v.Add("device_group", "invalid_device_group", `device_group must be PRODUCT/GROUP, or "" for none`)
	}
	return v.Err()
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// CA states.
const (
	// CAPending: created with its key; waiting for the platform root to certify it.
	CAPending = "pending"
	// CAActive: certified; issues device certificates (the newest active one does) and
	// is trusted for device connections.
	CAActive = "active"
	// CARetired: replaced by a newer CA; still trusted until RetireAt (the overlap), then
	// no more.
	CARetired = "retired"
)

// CA is one of a tenant's device certificate authorities. The private key is stored only
// wrapped (AES-GCM under the server's key-encryption key) and never leaves the server.
type CA struct {
	ID        string    `json:"id"`
	TenantID  tenant.ID `json:"tenant_id"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	// CSRPEM is the certificate request the platform root signs.
	CSRPEM string `json:"csr_pem"`
	// CertificatePEM is set once the platform root certified the CA.
	CertificatePEM string     `json:"certificate_pem,omitempty"`
	ActivatedAt    *time.Time `json:"activated_at,omitempty"`
	// RetireAt: for a retired CA, the end of the overlap during which it stays trusted.
	RetireAt   *time.Time `json:"retire_at,omitempty"`
	WrappedKey []byte     `json:"-"`
	Version    int64      `json:"version"`
}

// Trusted reports whether device certificates under the CA are accepted at now.
func (c CA) Trusted(now time.Time) bool {
	switch c.State {
	case CAActive:
		return true
	case CARetired:
		return c.RetireAt != nil && now.Before(*c.RetireAt)
	}
	return false
}

// Certificate records one issued device certificate, with what the device attested.
type Certificate struct {
	Serial    string          `json:"serial"` // hex, as in the certificate
	DeviceID  ID              `json:"device_id"`
	TenantID  tenant.ID       `json:"tenant_id"`
	CAID      string          `json:"ca_id"`
	ProductID product.ID      `json:"product_id"`
	GroupID   product.GroupID `json:"device_group_id"`
	Images    []Measurement   `json:"images"`
	IssuedAt  time.Time       `json:"issued_at"`
	NotAfter  time.Time       `json:"not_after"`
}

// Deployment says which application image the devices of one group run, from CreatedAt
// until a newer deployment of the group replaces it.
type Deployment struct {
	ID        string          `json:"id"`
	TenantID  tenant.ID       `json:"tenant_id"`
	ProductID product.ID      `json:"product_id"`
	GroupID   product.GroupID `json:"device_group_id"`
	// Target is the app image's TUF target path, apps/<name>/<version>.
	Target    string    `json:"target"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	// Reverts is set on a rollback: the ID of the deployment that was current and is
	// reverted; Target is then an earlier deployment's target.
	Reverts string `json:"reverts,omitempty"`
	// Rollout is set on a staged deployment (rollout.go); nil: the whole group at once.
	Rollout *Rollout `json:"rollout,omitempty"`
	// IgnoreWindow: devices install the image at once, outside their group's maintenance
	// window. Allowed only for an image whose security version is above the base's (a
	// security update that raises the anti-rollback floor).
	IgnoreWindow bool `json:"ignore_window,omitempty"`
}

// DeploymentIDPrefix starts every deployment ID; CAIDPrefix every CA ID.
const (
	DeploymentIDPrefix = "dep"
	CAIDPrefix         = "dca"
)

// DeploymentCreate is the body of a deployment request.
type DeploymentCreate struct {
	Target string `json:"target"`
	// Rollout, when set, deploys in stages (rollout.go).
	Rollout *RolloutCreate `json:"rollout,omitempty"`
	// IgnoreWindow: see Deployment.IgnoreWindow.
	IgnoreWindow bool `json:"ignore_window,omitempty"`
}

// DeploymentRollback is the body of a rollback request: To names the earlier deployment
// whose target to deploy again; empty means the one before the current one.
type DeploymentRollback struct {
	To string `json:"to,omitempty"`
}

// Validate checks the request's shape; the deployment is looked up by the caller.
func (d DeploymentRollback) Validate() error {
	var v problem.Validation
	if d.To != "" && !ident.Valid(DeploymentIDPrefix, d.To) {
		v.Add("to", "invalid_deployment_id", "to must be a deployment ID (dep_...)")
	}
	return v.Err()
}

// Validate checks the request's shape; the target is looked up by the caller.
func (d DeploymentCreate) Validate() error {
	var v problem.Validation
	if len(d.Target) < len("apps/x/1") || len(d.Target) > 255 || d.Target[:5] != "apps/" {
		v.Add("target", "invalid_target", "target must be an app image path apps/<name>/<version>")
	}
	if d.Rollout != nil {
		d.Rollout.Validate(&v)
	}
	return v.Err()
}
