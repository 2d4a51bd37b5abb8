package client

import (
	"context"
	"net/http"
	"time"
)

// SignInLink is a one-time web console sign-in link: Path, on the server's URL, signs the
// caller in once, until ExpiresAt.
type SignInLink struct {
	Path      string    `json:"path"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CreateSignInLink makes a one-time web console sign-in link for the caller (single use,
// expires within minutes). Open SignInLinkURL's answer in a browser.
func (c *Client) CreateSignInLink(ctx context.Context) (SignInLink, error) {
	var out SignInLink
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"console", "sign-in-links"}}, &out)
	return out, err
}

// SignInLinkURL is the link's full address on this client's server.
func (c *Client) SignInLinkURL(l SignInLink) string { return c.BaseURL() + l.Path }
