package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	"github.com/moat-iot/moat/internal/auth"
)

// AuthRule is who may call a route. The zero value is invalid, so a route that forgets its
// rule is refused at start-up (default deny).
type AuthRule int

const (
	authUnset AuthRule = iota
	// AuthNone: no authentication (health, the OpenAPI document).
	AuthNone
	// AuthAny: any authenticated principal, acting on itself.
	AuthAny
	// AuthOperator: platform operators only.
	AuthOperator
	// AuthTenant: a principal with at least MinRole in the path's {tenant}.
	AuthTenant
	// AuthDevice: a device, by its client certificate from its tenant's CA (mutual TLS);
	// its tenant is the certificate's, never the path's.
	AuthDevice
	// AuthDeviceProof: a device that has no certificate yet; the body carries its proof
	// (attestation), and the answer to a failed proof says only "refused".
	AuthDeviceProof
)

// Unauthenticated reports whether anyone may reach the route's handler without a
// credential the server checks first: such routes are served under the Limiter's cap and
// read small bodies only.
func (a AuthRule) Unauthenticated() bool { return a == AuthNone || a == AuthDeviceProof }

// Audience is who a route serves, and so which listener carries it.
type Audience int

const (
	// Management: people and their tools (bearer tokens), on the management listener.
	Management Audience = iota + 1
	// Devices: the device API (mutual TLS, or a proof in the body), on the device listener.
	Devices
	// A web console and a cloud audience join here, each with its own rules and listener.
)

// Audience returns the audience a rule serves.
func (a AuthRule) Audience() Audience {
	if a == AuthDevice || a == AuthDeviceProof {
		return Devices
	}
	return Management
}

// Body limits.
const (
	// DefaultMaxBodyBytes bounds a typed JSON body whose route declares no limit.
	DefaultMaxBodyBytes = 64 << 10
	// MaxUnauthenticatedBodyBytes bounds the body of every route that needs no credential:
	// a stranger makes the server hold at most this much per request (issue 10 defect 2).
	MaxUnauthenticatedBodyBytes = 64 << 10
)

// Route is one entry of an audience's route table. H is the audience's handler type.
type Route[H any] struct {
	Method  string
	Pattern string
	// OperationID names the operation in the OpenAPI document and the client.
	OperationID string
	Summary     string
	Auth        AuthRule
	MinRole     auth.Role // for AuthTenant
	// Request is the body type, nil for none.
	Request reflect.Type
	// MaxBodyBytes bounds the request body: 0 means DefaultMaxBodyBytes for a typed JSON
	// body; a raw body must declare its limit (CheckRoutes).
	MaxBodyBytes int64
	// Response is the success body type (the item type for lists), nil for none.
	Response reflect.Type
	List     bool
	Status   int
	// Filters are the list's query filters besides limit and page_token.
	Filters []string
	// IfMatch: "required" (428 without it), "optional", or "".
	IfMatch string
	// RawRequest: the body is bytes the handler reads itself (signed metadata, a PEM
	// certificate, a streamed file), not a Go type; RawResponse: the handler returns
	// bytes served as they are.
	RawRequest, RawResponse bool
	// RawRequestType and RawResponseType are the media types of raw bodies
	// (default application/json).
	RawRequestType, RawResponseType string
	// Recovery: an AuthDevice route that also admits a device's recovery token (a device
	// refused a certificate because its software is out of date fetches its update).
	Recovery bool
	Handler  H
}

// Audience returns the audience of a route, from its authorization rule.
func (rt Route[H]) Audience() Audience { return rt.Auth.Audience() }

// Name is "METHOD pattern", the route's label in logs and metrics.
func (rt Route[H]) Name() string { return rt.Method + " " + rt.Pattern }

// AcceptsBody reports whether the route reads a request body.
func (rt Route[H]) AcceptsBody() bool { return rt.Request != nil || rt.RawRequest }

// BodyLimit is the most body bytes the route reads: 0 when it reads none.
func (rt Route[H]) BodyLimit() int64 {
	switch {
	case !rt.AcceptsBody():
		return 0
	case rt.MaxBodyBytes > 0:
		return rt.MaxBodyBytes
	case rt.RawRequest:
		return 0 // undeclared: CheckRoutes refuses the table
	}
	return DefaultMaxBodyBytes
}

// CheckRoutes refuses a table with a route that lacks an authorization rule, a handler, an
// operation ID, a tenant in the path of a tenant-scoped route, or a body limit that fits
// what it reads.
func CheckRoutes[H any](rs []Route[H]) error {
	var errs []error
	seen := map[string]bool{}
	for _, rt := range rs {
		name := rt.Name()
		if seen[name] {
			errs = append(errs, fmt.Errorf("route %s: declared twice", name))
		}
		seen[name] = true
		if reflect.ValueOf(&rt.Handler).Elem().IsZero() || rt.OperationID == "" || rt.Status == 0 {
			errs = append(errs, fmt.Errorf("route %s: needs Handler, OperationID and Status", name))
		}
		switch rt.Auth {
		case authUnset:
			errs = append(errs, fmt.Errorf("route %s: no authorization rule", name))
		case AuthNone, AuthAny, AuthOperator:
		case AuthDevice, AuthDeviceProof:
			if rt.Recovery && (rt.Auth != AuthDevice || rt.Method != http.MethodGet) {
				errs = append(errs, fmt.Errorf("route %s: only device GETs admit recovery tokens", name))
			}
			if strings.Contains(rt.Pattern, "{tenant}") {
				errs = append(errs, fmt.Errorf("route %s: a device route takes its tenant from the certificate, not the path", name))
			}
		case AuthTenant:
			if !rt.MinRole.Valid() {
				errs = append(errs, fmt.Errorf("route %s: tenant route without MinRole", name))
			}
			if !strings.Contains(rt.Pattern, "{tenant}") {
				errs = append(errs, fmt.Errorf("route %s: tenant route without {tenant} in its path", name))
			}
		default:
			errs = append(errs, fmt.Errorf("route %s: no authorization rule", name))
		}
		if rt.Method != http.MethodGet && rt.Auth == AuthNone {
			errs = append(errs, fmt.Errorf("route %s: a write without authentication", name))
		}
		errs = append(errs, checkBodyLimit(rt))
	}
	return errors.Join(errs...)
}

func checkBodyLimit[H any](rt Route[H]) error {
	name := rt.Name()
	switch {
	case rt.MaxBodyBytes < 0:
		return fmt.Errorf("route %s: negative MaxBodyBytes", name)
	case !rt.AcceptsBody() && rt.MaxBodyBytes != 0:
		return fmt.Errorf("route %s: MaxBodyBytes on a route without a body", name)
	case rt.RawRequest && rt.MaxBodyBytes == 0:
		return fmt.Errorf("route %s: a raw body needs its own MaxBodyBytes", name)
	case rt.Auth.Unauthenticated() && rt.BodyLimit() > MaxUnauthenticatedBodyBytes:
		return fmt.Errorf("route %s: an unauthenticated route reads at most %d bytes, not %d", name, MaxUnauthenticatedBodyBytes, rt.BodyLimit())
	}
	return nil
}
