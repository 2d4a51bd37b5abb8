// Package tenant defines the tenant, the unit of isolation in moat: every device, product,
// image and audit event belongs to exactly one tenant, and nothing of one tenant is visible
// to another (rule 3). Pure types and validation; safe for concurrent use.
package tenant

import (
	"time"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
)

// ID identifies a tenant. The empty ID is never valid: stores refuse it (store.ErrNoTenant).
type ID string

// IDPrefix starts every tenant ID.
const IDPrefix = "tnt"

// Tenant is a manufacturer's account.
type Tenant struct {
	ID        ID        `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Version   int64     `json:"version"`
}

// Create is the body of a tenant creation request.
type Create struct {
	Name string `json:"name"`
}

// Validate reports every problem with the request.
func (c Create) Validate() error {
	var v problem.Validation
	ident.CheckName(&v, "name", c.Name)
	return v.Err()
}
