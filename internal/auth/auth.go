// Package auth defines who may call the management API: users, their API tokens and their
// roles per tenant, and the one authorization rule every route goes through.
//
// A token is shown once at creation as "moat_<token id>.<secret>"; only the SHA-256 of the
// 256-bit secret is stored, so a stolen database does not yield usable tokens, and the
// comparison is constant-time. A revoked or expired token authenticates nobody.
//
// Authorization fails closed (STYLE principle 3): a principal without a role in a tenant has
// no access to it, and the caller turns that into NotFound so tenants cannot be enumerated
// (rule 3; attacked by TestAPI_CrossTenantIsNotFound). Safe for concurrent use.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/tenant"
)

// UserID identifies a user.
type UserID string

// TokenID identifies an API token. It is not secret.
type TokenID string

// Role is a user's role in one tenant, as in Azure Sphere.
type Role string

const (
	Reader        Role = "Reader"
	Contributor   Role = "Contributor"
	Administrator Role = "Administrator"
)

// Roles lists the tenant roles, weakest first.
var Roles = []Role{Reader, Contributor, Administrator}

func (r Role) rank() int {
	switch r {
	case Reader:
		return 1
	case Contributor:
		return 2
	case Administrator:
		return 3
	}
	return 0 // unknown roles grant nothing
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.rank() > 0 }

// AtLeast reports whether r grants everything min grants.
func (r Role) AtLeast(min Role) bool { return r.rank() > 0 && r.rank() >= min.rank() }

// User is a person or a service account.
type User struct {
	ID               UserID    `json:"id"`
	Name             string    `json:"name"`
	PlatformOperator bool      `json:"platform_operator"`
	CreatedAt        time.Time `json:"created_at"`
}

// Token is an API token's record; the secret is never part of it.
type Token struct {
	ID        TokenID    `json:"id"`
	UserID    UserID     `json:"user_id"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Hash is the SHA-256 of the secret; never serialized.
	Hash []byte `json:"-"`
}

// Active reports whether the token may authenticate at now.
func (t Token) Active(now time.Time) bool {
	if t.RevokedAt != nil {
		return false
	}
	return t.ExpiresAt == nil || now.Before(*t.ExpiresAt)
}

// Member is a user's role in a tenant.
type Member struct {
	TenantID tenant.ID `json:"tenant_id"`
	User     User      `json:"user"`
	Role     Role      `json:"role"`
}

// tokenPrefix starts every presented token, so secret scanners can find leaked ones.
const tokenPrefix = "moat_"

// NewToken makes a token record and the secret to show once. The record holds only the
// secret's hash.
func NewToken(user UserID, name string, now time.Time, ttl time.Duration) (Token, string) {
	var secret [32]byte
	rand.Read(secret[:])
	enc := base64.RawURLEncoding.EncodeToString(secret[:])
	t := Token{
		ID:        TokenID(ident.New("tok", now)),
		UserID:    user,
		Name:      name,
		CreatedAt: now.UTC(),
		Hash:      hashSecret(enc),
	}
	if ttl > 0 {
		exp := now.Add(ttl).UTC()
		t.ExpiresAt = &exp
	}
	return t, tokenPrefix + string(t.ID) + "." + enc
}

func hashSecret(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// ErrMalformedToken is returned for a presented token that is not of moat's shape.
var ErrMalformedToken = errors.New("malformed token")

// ParseToken splits a presented token into its ID and secret.
func ParseToken(presented string) (TokenID, string, error) {
	rest, ok := strings.CutPrefix(presented, tokenPrefix)
	if !ok {
		return "", "", ErrMalformedToken
	}
	id, secret, ok := strings.Cut(rest, ".")
	if !ok || !ident.Valid("tok", id) || len(secret) != 43 {
		return "", "", ErrMalformedToken
	}
	return TokenID(id), secret, nil
}

// Matches reports, in constant time, whether secret is the token's secret.
func (t Token) Matches(secret string) bool {
	// Hashed from a buffer on the stack (a presented secret is 43 bytes): this runs on every
	// authenticated request, and []byte(secret) of more than 32 bytes is a heap copy.
	var buf [64]byte
	h := sha256.Sum256(append(buf[:0], secret...))
	return subtle.ConstantTimeCompare(t.Hash, h[:]) == 1
}

// Fingerprint is a short, non-secret label of a presented token for logs.
func Fingerprint(presented string) string {
	h := sha256.Sum256([]byte(presented))
	return hex.EncodeToString(h[:6])
}

// Principal is the authenticated caller of one request.
type Principal struct {
	User    User
	TokenID TokenID
	Roles   map[tenant.ID]Role
}

// RoleIn returns the principal's role in a tenant, or "" when it has none.
// Platform operators hold no tenant role unless granted one: their power is platform-wide
// operations (creating tenants), not reading a tenant's data.
func (p *Principal) RoleIn(t tenant.ID) Role {
	if p == nil {
		return ""
	}
	return p.Roles[t]
}

// Member reports whether the principal may see the tenant at all.
func (p *Principal) Member(t tenant.ID) bool { return p.RoleIn(t).Valid() }

// Require returns nil when the principal holds at least min in the tenant. Without any role
// it is NotFound (the tenant is invisible); with a weaker role it is Forbidden.
func (p *Principal) Require(t tenant.ID, min Role) error {
	r := p.RoleIn(t)
	if !r.Valid() {
		return problem.New(problem.NotFound, "tenant_not_found", "no tenant %s", t)
	}
	if !r.AtLeast(min) {
		return problem.New(problem.Forbidden, "role_required", "this needs the %s role in the tenant; you are %s", min, r)
	}
	return nil
}

// RequireOperator returns nil for a platform operator.
func (p *Principal) RequireOperator() error {
	if p == nil || !p.User.PlatformOperator {
		return problem.New(problem.Forbidden, "platform_operator_required", "this needs the platform-operator role")
	}
	return nil
}
