// Package audit defines the audit log: one event for every change made through the
// management API, with who made it (user and token), what changed, when and from where.
// Events are append-only and tenant-scoped; tenant administrators read their own tenant's
// log and nothing else (rule 3). Pure types; safe for concurrent use.
package audit

import (
	"time"

	"github.com/moat-iot/moat/internal/tenant"
)

// Event is one recorded change.
type Event struct {
	ID         string    `json:"id"`
	TenantID   tenant.ID `json:"tenant_id"`
	At         time.Time `json:"at"`
	ActorID    string    `json:"actor_id"`
	ActorName  string    `json:"actor_name"`
	TokenID    string    `json:"token_id"`
	Action     string    `json:"action"` // noun.verb, e.g. "product.create"
	ObjectType string    `json:"object_type"`
	ObjectID   string    `json:"object_id"`
	RemoteAddr string    `json:"remote_addr"`
	RequestID  string    `json:"request_id"`
	Detail     string    `json:"detail"` // short, human-readable, no secrets
}

// IDPrefix starts every event ID.
const IDPrefix = "evt"
