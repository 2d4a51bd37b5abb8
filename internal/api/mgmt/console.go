package mgmt

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"time"

	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
)

// SignInLinkTTL is how long a one-time console sign-in link stays usable.
const SignInLinkTTL = 5 * time.Minute

// MaxSignInLinksPerUser bounds the unused sign-in links one user holds: a new link deletes
// the oldest beyond it (any signed-in user may ask for links; attacked by storetest's
// Console/LinksBounded).
const MaxSignInLinksPerUser = 5

// SignInLinkPath is the console page that consumes a sign-in code (internal/console).
const SignInLinkPath = "/ui/sign-in/link"

// SignInLink is a one-time web console sign-in link: Path (with the code) on the
// management listener's URL signs the caller in once, until ExpiresAt.
type SignInLink struct {
	Path      string    `json:"path"`
	ExpiresAt time.Time `json:"expires_at"`
}

// HashSignInCode is what the store keeps of a sign-in code: its SHA-256, hex.
func HashSignInCode(code string) string {
	h := sha256.Sum256([]byte(code))
	return hex.EncodeToString(h[:])
}

// createSignInLink makes a one-time console sign-in link for the caller, bound to its user
// and the token it called with (revoking that token voids the link and every session made
// from it). The code is 256 random bits, stored only as its hash, consumed once by the
// console, and expires within SignInLinkTTL: a link that leaks from a terminal's scroll-back
// is worth nothing minutes later, and a long-lived token never appears in a URL (issue 11,
// part 6; attacked by console's TestConsole_SignInLinkWorksOnce).
func (a *API) createSignInLink(c *call) (any, error) {
	var b [32]byte
	rand.Read(b[:])
	code := base64.RawURLEncoding.EncodeToString(b[:])
	l := store.SignInLink{CodeHash: HashSignInCode(code), UserID: c.principal.User.ID, TokenID: c.principal.TokenID,
		CreatedAt: c.now, ExpiresAt: c.now.Add(SignInLinkTTL)}
	err := a.store.InTx(c.ctx, func(tx store.Tx) error {
		if err := tx.ConsoleSessions().CreateLink(c.ctx, l, MaxSignInLinksPerUser); err != nil {
			return err
		}
		return a.auditEverywhere(c, tx, "console.sign_in_link", "token", string(c.principal.TokenID), "one-time console sign-in link")
	})
	if err != nil {
		return nil, problem.Wrap(err)
	}
	return SignInLink{Path: SignInLinkPath + "?code=" + code, ExpiresAt: l.ExpiresAt}, nil
}
