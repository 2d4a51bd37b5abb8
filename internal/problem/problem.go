// Package problem is the one error type that crosses moat's API boundary and its rendering
// as RFC 9457 problem details (application/problem+json).
//
// Kind decides the HTTP status and the CLI exit code; Code is a stable snake_case string that
// clients branch on; Detail and Field are safe to show to the caller; Err is internal: it is
// logged by the HTTP edge and never serialized, so store errors, SQL and secrets cannot leak
// into a response. The package is stateless and safe for concurrent use.
package problem

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Kind is the class of a problem. Each kind maps to one HTTP status and one CLI exit code.
type Kind int

const (
	Internal Kind = iota
	Invalid
	Unauthenticated
	Forbidden
	NotFound
	Conflict
	PreconditionFailed
	PreconditionRequired
	TooLarge
	Unsupported
	Unavailable
	MethodNotAllowed
	// Unprocessable: a well-formed request that a rule refuses on what is stored (a
	// deployment that ignores maintenance windows without raising the anti-rollback floor).
	Unprocessable
)

var kindInfo = map[Kind]struct {
	status int
	title  string
	exit   int
	name   string
}{
	Internal:             {http.StatusInternalServerError, "Internal Server Error", 10, "internal"},
	Invalid:              {http.StatusBadRequest, "Bad Request", 3, "invalid"},
	Unauthenticated:      {http.StatusUnauthorized, "Unauthorized", 4, "unauthenticated"},
	Forbidden:            {http.StatusForbidden, "Forbidden", 5, "forbidden"},
	NotFound:             {http.StatusNotFound, "Not Found", 6, "not_found"},
	Conflict:             {http.StatusConflict, "Conflict", 7, "conflict"},
	PreconditionFailed:   {http.StatusPreconditionFailed, "Precondition Failed", 8, "precondition_failed"},
	PreconditionRequired: {http.StatusPreconditionRequired, "Precondition Required", 8, "precondition_required"},
	TooLarge:             {http.StatusRequestEntityTooLarge, "Content Too Large", 3, "too_large"},
	Unsupported:          {http.StatusUnsupportedMediaType, "Unsupported Media Type", 3, "unsupported_media_type"},
	Unavailable:          {http.StatusServiceUnavailable, "Service Unavailable", 9, "unavailable"},
	MethodNotAllowed:     {http.StatusMethodNotAllowed, "Method Not Allowed", 2, "method_not_allowed"},
	Unprocessable:        {http.StatusUnprocessableEntity, "Unprocessable Content", 3, "unprocessable"},
}

// Status is the HTTP status code of the kind.
func (k Kind) Status() int { return kindInfo[k].status }

// ExitCode is the CLI exit code of the kind (documented in docs/cli.md).
func (k Kind) ExitCode() int { return kindInfo[k].exit }

func (k Kind) String() string { return kindInfo[k].name }

// KindForStatus maps an HTTP status back to a kind, for clients that receive a problem.
func KindForStatus(status int) Kind {
	for k, info := range kindInfo {
		if info.status == status {
			return k
		}
	}
	switch {
	case status >= 500:
		return Internal
	case status >= 400:
		return Invalid
	}
	return Internal
}

// Error is a problem that can be shown to a caller.
type Error struct {
	Kind   Kind
	Code   string // stable, snake_case; clients branch on it
	Detail string // safe to show
	Field  string // JSON path of the offending field, if any
	Err    error  // internal cause: logged, never serialized
	// Fields lists every offending field when validation found several.
	Fields []FieldError
	// Extensions are further members of the problem document (RFC 9457 section 3.2), for
	// the caller the problem is about; they never replace a standard member.
	Extensions map[string]any
	// RetryAfter, when positive, is sent as the Retry-After header (whole seconds, rounded
	// up): when an Unavailable caller may try again.
	RetryAfter time.Duration
}

// FieldError names one invalid field.
type FieldError struct {
	Field  string `json:"field"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

func (e *Error) Error() string {
	msg := e.Code
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Field != "" {
		msg += " (field " + e.Field + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// New returns a problem of the given kind.
func New(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Wrap returns an internal problem whose cause is logged but not shown.
func Wrap(err error) *Error {
	return &Error{Kind: Internal, Code: "internal", Detail: "the server could not complete the request", Err: err}
}

// From returns err as a problem: itself when it is one, an internal problem otherwise.
func From(err error) *Error {
	if p, ok := errors.AsType[*Error](err); ok {
		return p
	}
	return Wrap(err)
}

// Body is the RFC 9457 JSON document. Extension members: code, field, errors.
type Body struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Code     string       `json:"code"`
	Field    string       `json:"field,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
	// Extensions are written as further top-level members.
	Extensions map[string]any `json:"-"`
}

// MarshalJSON writes the members, then the extension members that do not collide with one.
func (b Body) MarshalJSON() ([]byte, error) {
	type plain Body
	data, err := json.Marshal(plain(b))
	if err != nil || len(b.Extensions) == 0 {
		return data, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	for k, v := range b.Extensions {
		if _, taken := m[k]; !taken {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// TypeBase prefixes the problem type URI; the code completes it. A URN, so that no
// dereferenceable address is claimed (RFC 9457 section 3.1.1 allows any absolute URI).
const TypeBase = "urn:moat:problem:"

// ContentType is the media type of a problem document.
const ContentType = "application/problem+json"

// Body renders the problem; instance is the request path.
func (e *Error) Body(instance string) Body {
	info := kindInfo[e.Kind]
	return Body{
		Type:       TypeBase + e.Code,
		Title:      info.title,
		Status:     info.status,
		Detail:     e.Detail,
		Instance:   instance,
		Code:       e.Code,
		Field:      e.Field,
		Errors:     e.Fields,
		Extensions: e.Extensions,
	}
}

// Write renders err as problem+json. The caller logs e.Err.
func Write(w http.ResponseWriter, r *http.Request, err error) {
	p := From(err)
	body := p.Body(r.URL.Path)
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((p.RetryAfter+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(body.Status)
	_ = json.NewEncoder(w).Encode(body)
}

// Validation collects field problems so a caller sees all of them at once.
type Validation struct {
	fields []FieldError
}

// Add records one invalid field.
func (v *Validation) Add(field, code, format string, args ...any) {
	v.fields = append(v.fields, FieldError{Field: field, Code: code, Detail: fmt.Sprintf(format, args...)})
}

// Err returns nil when nothing was added, else an Invalid problem naming the first field
// and listing all of them.
func (v *Validation) Err() error {
	if len(v.fields) == 0 {
		return nil
	}
	first := v.fields[0]
	detail := first.Detail
	if len(v.fields) > 1 {
		detail = fmt.Sprintf("%s (and %d more problems)", first.Detail, len(v.fields)-1)
	}
	return &Error{Kind: Invalid, Code: first.Code, Detail: detail, Field: first.Field, Fields: v.fields}
}
