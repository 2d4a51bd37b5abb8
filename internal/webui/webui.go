// Package webui holds what the cloud's server-rendered pages share (the owners' portal,
// internal/cloud/portal, and the support view, internal/cloud/support): the security
// headers with a strict Content-Security-Policy, session IDs kept only as hashes,
// __Host- session cookies (HttpOnly, Secure, SameSite=Strict), and per-session CSRF tokens.
// Cross-origin form posts are refused first by http.CrossOriginProtection (Origin and
// Sec-Fetch-Site), which the pages' handlers wrap around every POST; the CSRF token is the
// second line, for browsers that send neither header.
package webui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"time"
)

// CSP allows only the pages' own style sheets and images (and data: images for inline SVG
// charts): no script at all, no inline style, no plug-ins, no framing, forms post only
// to the same origin.
const CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Headers sets the security headers of every response: page responses are not cached,
// static files are for an hour.
func Headers(page bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if page {
			h.Set("Cache-Control", "no-store")
		} else {
			h.Set("Cache-Control", "public, max-age=3600")
		}
		next.ServeHTTP(w, r)
	})
}

// IDLength is the length of a session ID in its cookie (32 random bytes, base64url).
const IDLength = 43

// NewID returns a fresh random session ID (for the cookie) and its hash (for the store).
func NewID() (id, hash string) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	id = base64.RawURLEncoding.EncodeToString(b[:])
	return id, HashID(id)
}

// HashID is what a store keeps of a session ID or any other high-entropy secret.
func HashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// SetCookie sets the session cookie name (which must start with "__Host-") to id until
// expires.
func SetCookie(w http.ResponseWriter, name, id string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: id, Path: "/", Expires: expires, MaxAge: int(time.Until(expires).Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// ClearCookie removes the session cookie name.
func ClearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// SessionID returns the session ID of cookie name, or "" when the request has none of the
// right shape.
func SessionID(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil || len(c.Value) != IDLength {
		return ""
	}
	return c.Value
}

// CSRFField is the form field that carries the CSRF token.
const CSRFField = "csrf"

// ErrCSRF is a form post without its session's CSRF token.
var ErrCSRF = errors.New("missing or wrong CSRF token")

// CSRFToken is the form token of the session with ID id: an HMAC keyed by the session ID,
// which only the session's browser has (the store keeps only its hash), so a token can be
// checked without storing it and is useless to anyone who lacks the cookie.
func CSRFToken(id string) string {
	m := hmac.New(sha256.New, []byte(id))
	m.Write([]byte("moat web csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CheckCSRF refuses a form post (already parsed with its body bound) that lacks the token
// of session id.
func CheckCSRF(r *http.Request, id string) error {
	got := r.PostForm.Get(CSRFField)
	if id == "" || got == "" || !hmac.Equal([]byte(got), []byte(CSRFToken(id))) {
		return ErrCSRF
	}
	return nil
}
