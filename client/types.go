package client

import "time"

// These types mirror the JSON of the management API field for field; TestWireTypes checks
// them against the server's types so that they cannot drift apart.

// Role is a user's role in one tenant.
type Role string

// Roles, weakest first.
const (
	RoleReader        Role = "Reader"
	RoleContributor   Role = "Contributor"
	RoleAdministrator Role = "Administrator"
)

// Roles lists the tenant roles, weakest first.
var Roles = []Role{RoleReader, RoleContributor, RoleAdministrator}

// OSFeed is the OS release feed a device group follows.
type OSFeed string

// OS feeds.
const (
	OSFeedRetail     OSFeed = "Retail"
	OSFeedRetailEval OSFeed = "RetailEval"
)

// OSFeeds lists the OS feeds.
var OSFeeds = []OSFeed{OSFeedRetail, OSFeedRetailEval}

// UpdatePolicy says which updates the devices of a group accept.
type UpdatePolicy string

// Update policies.
const (
	UpdateAll    UpdatePolicy = "UpdateAll"
	UpdateOSOnly UpdatePolicy = "UpdateOSOnly"
)

// UpdatePolicies lists the update policies.
var UpdatePolicies = []UpdatePolicy{UpdateAll, UpdateOSOnly}

// User is a person or a service account.
type User struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	PlatformOperator bool      `json:"platform_operator"`
	CreatedAt        time.Time `json:"created_at"`
}

// Token is an API token's record; its secret is shown only once, at creation.
type Token struct {
	ID        string     `json:"id"`
	UserID    string     `json:"user_id"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// TenantRole is one of the caller's roles.
type TenantRole struct {
	TenantID string `json:"tenant_id"`
	Role     Role   `json:"role"`
}

// Me describes the caller: its user, the token it called with and its roles.
type Me struct {
	User    User         `json:"user"`
	TokenID string       `json:"token_id"`
	Roles   []TenantRole `json:"roles"`
}

// TokenCreate asks for a new API token for the caller.
type TokenCreate struct {
	Name string `json:"name"`
	// ExpiresIn is a Go duration ("720h"); empty means the token does not expire.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// TokenCreated is a new token and its secret, which the server shows this once.
type TokenCreated struct {
	Token  Token  `json:"token"`
	Secret string `json:"secret"`
}

// Tenant is a manufacturer's account.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Version   int64     `json:"version"`
	// StorageQuotaBytes is the quota the platform operator set; nil: the server's default.
	StorageQuotaBytes *int64 `json:"storage_quota_bytes,omitempty"`
}

// TenantCreate is the body of a tenant creation.
type TenantCreate struct {
	Name string `json:"name"`
}

// Member is a user's role in a tenant.
type Member struct {
	TenantID string `json:"tenant_id"`
	User     User   `json:"user"`
	Role     Role   `json:"role"`
}

// MemberCreate creates a new user with a role in a tenant.
type MemberCreate struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// MemberCreated is the new member and its first token, whose secret is shown this once.
type MemberCreated struct {
	Member Member `json:"member"`
	Token  Token  `json:"token"`
	Secret string `json:"secret"`
}

// memberPut is the body of PutMember.
type memberPut struct {
	Role Role `json:"role"`
}

// AuditEvent is one recorded change.
type AuditEvent struct {
	ID         string    `json:"id"`
	TenantID   string    `json:"tenant_id"`
	At         time.Time `json:"at"`
	ActorID    string    `json:"actor_id"`
	ActorName  string    `json:"actor_name"`
	TokenID    string    `json:"token_id"`
	Action     string    `json:"action"`
	ObjectType string    `json:"object_type"`
	ObjectID   string    `json:"object_id"`
	RemoteAddr string    `json:"remote_addr"`
	RequestID  string    `json:"request_id"`
	Detail     string    `json:"detail"`
}

// Product is a model of device.
type Product struct {
	ID          string `json:"id"`
	TenantID    string `json:"tenant_id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	// MaxUpdateDeferralSeconds bounds how long an app on the product's devices may defer
	// an update, from its first deferral of a pending image (0 to 7 days; 0: no deferral).
	MaxUpdateDeferralSeconds int64     `json:"max_update_deferral_seconds"`
	CreatedAt                time.Time `json:"created_at"`
	UpdatedAt                time.Time `json:"updated_at"`
	Version                  int64     `json:"version"`
}

// ProductCreate is the body of a product creation.
type ProductCreate struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// MaxUpdateDeferralSeconds, optional: 86400 (24 h) when nil.
	MaxUpdateDeferralSeconds *int64 `json:"max_update_deferral_seconds,omitempty"`
}

// ProductUpdate is a merge patch of a product: nil fields stay as they are.
type ProductUpdate struct {
	Name                     *string `json:"name,omitempty"`
	Description              *string `json:"description,omitempty"`
	MaxUpdateDeferralSeconds *int64  `json:"max_update_deferral_seconds,omitempty"`
}

// MaintenanceWindow is when a device group's devices install updates: on Days ("mon" to
// "sun"), from Start ("HH:MM" local time in TimeZone, an IANA name) for Length (a Go
// duration, 15m to 24h).
type MaintenanceWindow struct {
	Days     []string `json:"days"`
	Start    string   `json:"start"`
	Length   string   `json:"length"`
	TimeZone string   `json:"time_zone"`
}

// DeviceGroup is a device group of a product.
type DeviceGroup struct {
	ID           string       `json:"id"`
	TenantID     string       `json:"tenant_id"`
	ProductID    string       `json:"product_id"`
	Name         string       `json:"name"`
	Description  string       `json:"description"`
	OSFeed       OSFeed       `json:"os_feed"`
	UpdatePolicy UpdatePolicy `json:"update_policy"`
	// MaintenanceWindow is nil when the devices install at any time.
	MaintenanceWindow *MaintenanceWindow `json:"maintenance_window,omitempty"`
	CreatedAt         time.Time          `json:"created_at"`
	UpdatedAt         time.Time          `json:"updated_at"`
	Version           int64              `json:"version"`
}

// DeviceGroupCreate is the body of a device-group creation. OSFeed and UpdatePolicy are
// required.
type DeviceGroupCreate struct {
	Name         string       `json:"name"`
	Description  string       `json:"description,omitempty"`
	OSFeed       OSFeed       `json:"os_feed"`
	UpdatePolicy UpdatePolicy `json:"update_policy"`
	// MaintenanceWindow, optional: nil installs at any time.
	MaintenanceWindow *MaintenanceWindow `json:"maintenance_window,omitempty"`
}

// DeviceGroupUpdate is a merge patch of a device group: nil fields stay as they are.
type DeviceGroupUpdate struct {
	Name         *string       `json:"name,omitempty"`
	Description  *string       `json:"description,omitempty"`
	OSFeed       *OSFeed       `json:"os_feed,omitempty"`
	UpdatePolicy *UpdatePolicy `json:"update_policy,omitempty"`
	// MaintenanceWindow replaces the group's window; ClearMaintenanceWindow removes it.
	MaintenanceWindow      *MaintenanceWindow `json:"maintenance_window,omitempty"`
	ClearMaintenanceWindow bool               `json:"clear_maintenance_window,omitempty"`
}

// ListOptions selects one page of a list.
type ListOptions struct {
	// Limit is the page size (1 to 1000); 0 takes the server's default (100).
	Limit int
	// PageToken continues a list from a previous page's NextPageToken.
	PageToken string
	// Name keeps only the object with this exact name, on lists that support it
	// (tenants, products, device groups).
	Name string
	// Product keeps only the devices of the product with this name (ListDevices,
	// ListDeviceStatuses).
	Product string
	// Group and State keep only the devices of the product's group with this name, and in
	// this fleet state (never, refused, current, failed, pending); both need Product.
	Group, State string
}

// Page is one page of a list. NextPageToken is empty on the last page.
type Page[T any] struct {
	Items         []T    `json:"items"`
	NextPageToken string `json:"next_page_token,omitempty"`
}
