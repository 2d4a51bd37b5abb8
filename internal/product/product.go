// Package product defines products and their device groups, as in Azure Sphere: a product
// (DW100) is a model of device a tenant makes; its device groups (Development, Field Test,
// Production, ...) decide which OS feed and which updates the devices in them take.
//
// Pure types and validation; safe for concurrent use.
package product

import (
	"time"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/tenant"
)

// ID identifies a product.
type ID string

// GroupID identifies a device group.
type GroupID string

// ID prefixes.
const (
	IDPrefix      = "prd"
	GroupIDPrefix = "grp"
)

// Product is a model of device.
type Product struct {
	ID          ID        `json:"id"`
	TenantID    tenant.ID `json:"tenant_id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	// MaxUpdateDeferralSeconds bounds how long an application on the product's devices may
	// defer an update (issue 12, Azure Sphere's SoftwareUpdateDeferral), counted from the
	// first deferral of a pending image: 0 to MaxUpdateDeferral, DefaultMaxUpdateDeferral
	// unless set. 0 means the app cannot defer.
	MaxUpdateDeferralSeconds int64     `json:"max_update_deferral_seconds"`
	CreatedAt                time.Time `json:"created_at"`
	UpdatedAt                time.Time `json:"updated_at"`
	Version                  int64     `json:"version"`
}

// Bounds of Product.MaxUpdateDeferralSeconds.
const (
	DefaultMaxUpdateDeferral = 24 * time.Hour
	MaxUpdateDeferral        = 7 * 24 * time.Hour
)

// Create is the body of a product creation request.
type Create struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// MaxUpdateDeferralSeconds, optional: DefaultMaxUpdateDeferral when absent.
	MaxUpdateDeferralSeconds *int64 `json:"max_update_deferral_seconds,omitempty"`
}

// Validate reports every problem with the request.
func (c Create) Validate() error {
	var v problem.Validation
	ident.CheckName(&v, "name", c.Name)
	ident.CheckDescription(&v, "description", c.Description)
	if c.MaxUpdateDeferralSeconds != nil {
		checkDeferral(&v, *c.MaxUpdateDeferralSeconds)
	}
	return v.Err()
}

// Deferral returns the request's MaxUpdateDeferralSeconds, or the default.
func (c Create) Deferral() int64 {
	if c.MaxUpdateDeferralSeconds == nil {
		return int64(DefaultMaxUpdateDeferral / time.Second)
	}
	return *c.MaxUpdateDeferralSeconds
}

func checkDeferral(v *problem.Validation, s int64) {
	if s < 0 || s > int64(MaxUpdateDeferral/time.Second) {
		v.Add("max_update_deferral_seconds", "invalid_max_update_deferral", "max_update_deferral_seconds must be 0 to %d (7 days)", int64(MaxUpdateDeferral/time.Second))
	}
}

// Update is the body of a product update (a JSON merge patch: absent fields stay).
type Update struct {
	Name                     *string `json:"name,omitempty"`
	Description              *string `json:"description,omitempty"`
	MaxUpdateDeferralSeconds *int64  `json:"max_update_deferral_seconds,omitempty"`
}

// Validate reports every problem with the request.
func (u Update) Validate() error {
	var v problem.Validation
	if u.Name == nil && u.Description == nil && u.MaxUpdateDeferralSeconds == nil {
		v.Add("", "empty_update", "the update changes nothing: give name, description or max_update_deferral_seconds")
	}
	if u.Name != nil {
		ident.CheckName(&v, "name", *u.Name)
	}
	if u.Description != nil {
		ident.CheckDescription(&v, "description", *u.Description)
	}
	if u.MaxUpdateDeferralSeconds != nil {
		checkDeferral(&v, *u.MaxUpdateDeferralSeconds)
	}
	return v.Err()
}

// Apply returns p with the update applied.
func (u Update) Apply(p Product) Product {
	if u.Name != nil {
		p.Name = *u.Name
	}
	if u.Description != nil {
		p.Description = *u.Description
	}
	if u.MaxUpdateDeferralSeconds != nil {
		p.MaxUpdateDeferralSeconds = *u.MaxUpdateDeferralSeconds
	}
	return p
}

// OSFeed is the OS release feed a device group follows.
type OSFeed string

const (
	Retail     OSFeed = "Retail"
	RetailEval OSFeed = "RetailEval"
)

// OSFeeds lists the feeds.
var OSFeeds = []OSFeed{Retail, RetailEval}

func (f OSFeed) valid() bool { return f == Retail || f == RetailEval }

// UpdatePolicy says which updates the devices of a group accept.
type UpdatePolicy string

const (
	// UpdateAll accepts OS and application updates.
	UpdateAll UpdatePolicy = "UpdateAll"
	// UpdateOSOnly accepts OS updates only; applications are left as they are (for
	// development devices whose apps are side-loaded).
	UpdateOSOnly UpdatePolicy = "UpdateOSOnly"
)

// UpdatePolicies lists the policies.
var UpdatePolicies = []UpdatePolicy{UpdateAll, UpdateOSOnly}

func (p UpdatePolicy) valid() bool { return p == UpdateAll || p == UpdateOSOnly }

// Group is a device group of a product.
type Group struct {
	ID           GroupID      `json:"id"`
	TenantID     tenant.ID    `json:"tenant_id"`
	ProductID    ID           `json:"product_id"`
	Name         string       `json:"name"`
	Description  string       `json:"description"`
	OSFeed       OSFeed       `json:"os_feed"`
	UpdatePolicy UpdatePolicy `json:"update_policy"`
	// MaintenanceWindow, optional, is when the group's devices install updates; nil: any
	// time.
	MaintenanceWindow *MaintenanceWindow `json:"maintenance_window,omitempty"`
	CreatedAt         time.Time          `json:"created_at"`
	UpdatedAt         time.Time          `json:"updated_at"`
	Version           int64              `json:"version"`
}

// GroupCreate is the body of a device-group creation request. OSFeed and UpdatePolicy are
// required: a group's update behaviour is never a silent default.
type GroupCreate struct {
	Name         string       `json:"name"`
	Description  string       `json:"description,omitempty"`
	OSFeed       OSFeed       `json:"os_feed"`
	UpdatePolicy UpdatePolicy `json:"update_policy"`
	// MaintenanceWindow, optional: nil installs any time.
	MaintenanceWindow *MaintenanceWindow `json:"maintenance_window,omitempty"`
}

// Validate reports every problem with the request.
func (c GroupCreate) Validate() error {
	var v problem.Validation
	ident.CheckName(&v, "name", c.Name)
	ident.CheckDescription(&v, "description", c.Description)
	checkFeed(&v, c.OSFeed)
	checkPolicy(&v, c.UpdatePolicy)
	if c.MaintenanceWindow != nil {
		c.MaintenanceWindow.check(&v, "maintenance_window.")
	}
	return v.Err()
}

func checkFeed(v *problem.Validation, f OSFeed) {
	if !f.valid() {
		v.Add("os_feed", "invalid_os_feed", "os_feed must be Retail or RetailEval")
	}
}

func checkPolicy(v *problem.Validation, p UpdatePolicy) {
	if !p.valid() {
		v.Add("update_policy", "invalid_update_policy", "update_policy must be UpdateAll or UpdateOSOnly")
	}
}

// GroupUpdate is the body of a device-group update (merge patch).
type GroupUpdate struct {
	Name         *string       `json:"name,omitempty"`
	Description  *string       `json:"description,omitempty"`
	OSFeed       *OSFeed       `json:"os_feed,omitempty"`
	UpdatePolicy *UpdatePolicy `json:"update_policy,omitempty"`
	// MaintenanceWindow replaces the group's window; ClearMaintenanceWindow removes it (the
	// devices install any time again). At most one of the two.
	MaintenanceWindow      *MaintenanceWindow `json:"maintenance_window,omitempty"`
	ClearMaintenanceWindow bool               `json:"clear_maintenance_window,omitempty"`
}

// Validate reports every problem with the request.
func (u GroupUpdate) Validate() error {
	var v problem.Validation
	if u.Name == nil && u.Description == nil && u.OSFeed == nil && u.UpdatePolicy == nil && u.MaintenanceWindow == nil && !u.ClearMaintenanceWindow {
		v.Add("", "empty_update", "the update changes nothing: give name, description, os_feed, update_policy, maintenance_window or clear_maintenance_window")
	}
	switch {
	case u.MaintenanceWindow != nil && u.ClearMaintenanceWindow:
		v.Add("clear_maintenance_window", "conflicting_window_update", "give maintenance_window or clear_maintenance_window, not both")
	case u.MaintenanceWindow != nil:
		u.MaintenanceWindow.check(&v, "maintenance_window.")
	}
	if u.Name != nil {
		ident.CheckName(&v, "name", *u.Name)
	}
	if u.Description != nil {
		ident.CheckDescription(&v, "description", *u.Description)
	}
	if u.OSFeed != nil {
		checkFeed(&v, *u.OSFeed)
	}
	if u.UpdatePolicy != nil {
		checkPolicy(&v, *u.UpdatePolicy)
	}
	return v.Err()
}

// Apply returns g with the update applied.
func (u GroupUpdate) Apply(g Group) Group {
	if u.Name != nil {
		g.Name = *u.Name
	}
	if u.Description != nil {
		g.Description = *u.Description
	}
	if u.OSFeed != nil {
		g.OSFeed = *u.OSFeed
	}
	if u.UpdatePolicy != nil {
		g.UpdatePolicy = *u.UpdatePolicy
	}
	if u.MaintenanceWindow != nil {
		w := *u.MaintenanceWindow
		g.MaintenanceWindow = &w
	}
	if u.ClearMaintenanceWindow {
		g.MaintenanceWindow = nil
	}
	return g
}

// DefaultGroups are created with every product, as Azure Sphere creates them: developers
// side-load apps in Development; Field Test and Production take every update from the
// Retail feed; the two OS Evaluation groups try the next OS from RetailEval first.
var DefaultGroups = []GroupCreate{
	{Name: "Development", Description: "Default group for development devices; applications are side-loaded, only OS updates are taken.", OSFeed: Retail, UpdatePolicy: UpdateOSOnly},
	{Name: "Field Test", Description: "Default group for devices in field testing.", OSFeed: Retail, UpdatePolicy: UpdateAll},
	{Name: "Production", Description: "Default group for production devices.", OSFeed: Retail, UpdatePolicy: UpdateAll},
	{Name: "Field Test OS Evaluation", Description: "Default group for field test devices that evaluate the next OS release.", OSFeed: RetailEval, UpdatePolicy: UpdateAll},
	{Name: "Production OS Evaluation", Description: "Default group for production devices that evaluate the next OS release.", OSFeed: RetailEval, UpdatePolicy: UpdateAll},
}
