package client

import (
	"encoding/json"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is a failure the server reported: an RFC 9457 problem document, or for a response
// that is not one (a proxy's error page, say) just its status.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Type is the problem type URI, e.g. urn:moat:problem:name_taken.
	Type  string
	Title string
	// Code is stable and snake_case (name_taken, etag_mismatch, unauthenticated, ...):
	// branch on it, never on Detail. Empty when the body was not a problem document.
	Code string
	// Detail is a human-readable explanation that is safe to show.
	Detail string
	// Field names the offending request field, if any.
	Field string
	// Errors lists every invalid field when the server found several.
	Errors []FieldError
	// Instance is the request path the problem is about.
	Instance string
	// RequestID is the server's ID for the request (X-Request-Id), for its logs.
	RequestID string
	// RetryAfter is what the server's Retry-After header asked to wait (a 503 or 429 when
	// it is busy), 0 without one.
	RetryAfter time.Duration
	// Recovery is the grant that comes with an attestation refused only because the
	// device's software is out of date: a token that opens the device API's update routes
	// (WithToken) until ExpiresAt, so the device can install its update and attest again.
	Recovery *Recovery
}

// Recovery is a recovery grant for a device refused a certificate.
type Recovery struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// TenantID is the tenant that claimed the device, whose update routes the grant opens.
	TenantID string `json:"tenant_id"`
}

// FieldError names one invalid field.
type FieldError struct {
	Field  string `json:"field"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// Error reads like "name_taken: another product in the same scope already has this name
// (field name)".
func (e *Error) Error() string {
	var b strings.Builder
	if e.Code != "" {
		b.WriteString(e.Code)
	} else {
		b.WriteString("HTTP " + strconv.Itoa(e.Status))
		if t := http.StatusText(e.Status); t != "" {
			b.WriteString(" " + t)
		}
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	if e.Field != "" {
		b.WriteString(" (field " + e.Field + ")")
	}
	return b.String()
}

// problemBody is the RFC 9457 document with moat's extension members.
type problemBody struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail"`
	Instance string       `json:"instance"`
	Code     string       `json:"code"`
	Field    string       `json:"field"`
	Errors   []FieldError `json:"errors"`
	Recovery *Recovery    `json:"recovery"`
}

// decodeError turns an unsuccessful response into an *Error. The HTTP status always wins
// over a status in the body.
func decodeError(resp *http.Response, data []byte) *Error {
	e := &Error{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode), RequestID: resp.Header.Get("X-Request-Id"),
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "application/problem+json" {
		return e
	}
	var p problemBody
	if err := json.Unmarshal(data, &p); err != nil {
		return e
	}
	e.Type, e.Code, e.Detail, e.Field, e.Errors, e.Instance = p.Type, p.Code, p.Detail, p.Field, p.Errors, p.Instance
	e.Recovery = p.Recovery
	if p.Title != "" {
		e.Title = p.Title
	}
	return e
}

// maxRetryAfter bounds what a Retry-After header can ask for.
const maxRetryAfter = time.Hour

// retryAfter reads a Retry-After value: seconds, or an HTTP date (RFC 9110 section
// 10.2.3); anything else is 0. It is capped at maxRetryAfter.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}
