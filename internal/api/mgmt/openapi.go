package mgmt

import (
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strings"

	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/trust"
)

// The OpenAPI document is generated from the route table and the Go types of the bodies, so
// it cannot drift from the code (STYLE principle 5); TestOpenAPI_MatchesRoutes checks it with
// an independent OpenAPI implementation and validates real responses against it.

// APIVersion is the version of the management API in the OpenAPI document.
const APIVersion = "1.0.0"

// enums lists the allowed values of string types.
var enums = map[reflect.Type][]string{
	reflect.TypeFor[auth.Role]():            {string(auth.Reader), string(auth.Contributor), string(auth.Administrator)},
	reflect.TypeFor[product.OSFeed]():       {string(product.Retail), string(product.RetailEval)},
	reflect.TypeFor[product.UpdatePolicy](): {string(product.UpdateAll), string(product.UpdateOSOnly)},
	reflect.TypeFor[errreport.Kind]():       enumOf(errreport.Kinds),
	reflect.TypeFor[errreport.Step]():       enumOf(errreport.Steps),
}

func enumOf[S ~string](vals []S) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = string(v)
	}
	return out
}

// schemaNames overrides the generated component name of a type.
var schemaNames = map[reflect.Type]string{
	reflect.TypeFor[product.Group]():          "DeviceGroup",
	reflect.TypeFor[product.GroupCreate]():    "DeviceGroupCreate",
	reflect.TypeFor[product.GroupUpdate]():    "DeviceGroupUpdate",
	reflect.TypeFor[problem.Body]():           "Problem",
	reflect.TypeFor[auth.Token]():             "Token",
	reflect.TypeFor[auth.User]():              "User",
	reflect.TypeFor[auth.Member]():            "Member",
	reflect.TypeFor[trust.SigningKey]():       "SigningKey",
	reflect.TypeFor[trust.KeyCreate]():        "SigningKeyCreate",
	reflect.TypeFor[errreport.Report]():       "ErrorReport",
	reflect.TypeFor[errreport.Batch]():        "ErrorReportBatch",
	reflect.TypeFor[errreport.Accepted]():     "ErrorReportsAccepted",
	reflect.TypeFor[errreport.Record]():       "ErrorReportRecord",
	reflect.TypeFor[errreport.Issue]():        "ErrorIssue",
	reflect.TypeFor[errreport.IssueDetail]():  "ErrorIssueDetail",
	reflect.TypeFor[errreport.IssueVersion](): "ErrorIssueVersion",
	reflect.TypeFor[errreport.IssueDay]():     "ErrorIssueDay",
}

type obj = map[string]any

// newSchemas is the management API's schema builder: its component names and enums, and
// names bounded as ident.MaxNameChars.
func newSchemas() *httpapi.Schemas {
	s := httpapi.NewSchemas("mgmt")
	s.Names, s.Enums = schemaNames, enums
	s.Field = func(name string, t reflect.Type, p map[string]any) map[string]any {
		if t.Kind() == reflect.String && name == "name" {
			return obj{"type": "string", "minLength": 1, "maxLength": ident.MaxNameChars}
		}
		return p
	}
	return s
}

var pathParam = regexp.MustCompile(`\{([a-z_]+)(?:\.\.\.)?\}`)

// OpenAPIPath is a route pattern as an OpenAPI path template: a ServeMux wildcard
// "{name...}" (the rest of the path) becomes "{name}".
func OpenAPIPath(pattern string) string { return strings.ReplaceAll(pattern, "...}", "}") }

var paramDescriptions = map[string]string{
	"tenant":  "Tenant ID (tnt_...).",
	"product": "Product ID (prd_...).",
	"group":   "Device group ID (grp_...).",
	"user":    "User ID (usr_...).",
	"token":   "Token ID (tok_...).",
	"key":     "Signing key record ID (key_...).",
	"target":  "A target's hash-prefixed path as TUF clients ask for it: apps/<name>/<sha256>.<version>.",
	"device":  "Device ID: 64 lower-case hex digits, the SHA-256 of the device's public key (PKIX DER).",
	"ca":      "Device CA ID (dca_...).",
	"issue":   "Error issue ID (iss_ and 20 hex digits).",
	"file":    "A TUF metadata file name: N.root.json, N.targets.json, N.apps.json, N.snapshot.json or timestamp.json.",
}

// OpenAPI builds the OpenAPI 3.0 document of the management API.
func OpenAPI() map[string]any {
	s := newSchemas()
	problemResponse := s.ProblemResponse(reflect.TypeFor[problem.Body]())
	paths := obj{}
	for _, rt := range Routes() {
		op := obj{
			"operationId": rt.OperationID,
			"summary":     rt.Summary,
			"tags":        []string{tagOf(rt.Pattern)},
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.Pattern, -1) {
			params = append(params, obj{"name": m[1], "in": "path", "required": true,
				"description": paramDescriptions[m[1]], "schema": obj{"type": "string"}})
		}
		if rt.List {
			params = append(params,
				obj{"name": "limit", "in": "query", "required": false, "description": "Page size, 1 to 1000 (default 100).",
					"schema": obj{"type": "integer", "minimum": 1, "maximum": MaxPageSize, "default": DefaultPageSize}},
				obj{"name": "page_token", "in": "query", "required": false, "description": "next_page_token of the previous page.",
					"schema": obj{"type": "string"}})
		}
		for _, f := range rt.Filters {
			desc, ok := filterDescriptions[rt.OperationID][f]
			if !ok {
				desc, ok = commonFilterDescriptions[f]
			}
			if !ok {
				desc = "Only the object with this " + f + " (case-insensitive)."
			}
			params = append(params, obj{"name": f, "in": "query", "required": false, "description": desc, "schema": obj{"type": "string"}})
		}
		if rt.IfMatch != "" {
			params = append(params, obj{"name": "If-Match", "in": "header", "required": rt.IfMatch == "required",
				"description": "ETag of the version the change is based on.", "schema": obj{"type": "string"}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.Request != nil {
			op["requestBody"] = obj{"required": true, "content": obj{"application/json": obj{"schema": s.Schema(rt.Request)}}}
		}
		if rt.RawRequest {
			switch rt.RawRequestType {
			case "application/octet-stream":
				op["requestBody"] = obj{"required": true, "description": "The file, streamed.",
					"content": obj{rt.RawRequestType: obj{"schema": obj{"type": "string", "format": "binary"}}}}
			case "application/x-pem-file":
				op["requestBody"] = obj{"required": true, "description": "A PEM certificate.",
					"content": obj{rt.RawRequestType: obj{"schema": obj{"type": "string"}}}}
			default:
				op["requestBody"] = obj{"required": true, "description": "Signed TUF metadata, sent and stored byte for byte.",
					"content": obj{"application/json": obj{"schema": obj{"type": "object"}}}}
			}
		}
		responses := obj{}
		success := obj{"description": http.StatusText(rt.Status)}
		if rt.RawResponse {
			switch rt.RawResponseType {
			case "application/octet-stream":
				success["content"] = obj{rt.RawResponseType: obj{"schema": obj{"type": "string", "format": "binary"}}}
			case "application/x-pem-file":
				success["content"] = obj{rt.RawResponseType: obj{"schema": obj{"type": "string"}}}
			case "text/csv":
				success["content"] = obj{rt.RawResponseType: obj{"schema": obj{"type": "string"}},
					"application/json": obj{"schema": obj{"type": "array", "items": obj{"type": "object"}}}}
			default:
				success["content"] = obj{"application/json": obj{"schema": obj{"type": "object"}}}
			}
		}
		if rt.Response != nil {
			var body obj
			if rt.List {
				body = s.Page(rt.Response)
			} else {
				body = s.Schema(rt.Response)
			}
			success["content"] = obj{"application/json": obj{"schema": body}}
		}
		responses[fmt.Sprint(rt.Status)] = success
		responses["400"] = problemResponse("The request is malformed or invalid; field names the offending field.")
		switch rt.Auth {
		case AuthNone:
		case AuthDeviceProof:
			op["security"] = []any{}
			if rt.RawRequest {
				responses["403"] = problemResponse("Refused; the reason is recorded for support staff, not told to the caller. When the device's fresh, signed evidence shows only out-of-date software, the problem carries a `recovery` member {token, tenant_id, expires_at}: a token for the update routes (assignment, TUF metadata and targets), valid until the device next attests successfully.")
			}
		case AuthDevice:
			// OpenAPI 3.0 has no mutualTLS scheme (3.1 does): say it in words.
			op["security"] = []any{}
			op["description"] = "Requires mutual TLS with the device's certificate from its tenant's device CA (issued by attest)."
			if rt.Recovery {
				op["description"] = "Requires mutual TLS with the device's certificate from its tenant's device CA (issued by attest), or `Authorization: Bearer moat_rcv_...`: the recovery token of a refused attestation."
			}
			responses["401"] = problemResponse("No valid device certificate, or the device is blocked.")
		default:
			responses["401"] = problemResponse("No valid bearer token.")
			op["security"] = []any{obj{"bearerAuth": []string{}}}
		}
		if rt.Auth == AuthOperator || rt.Auth == AuthTenant {
			responses["403"] = problemResponse("The caller's role does not allow this.")
		}
		if pathParam.MatchString(rt.Pattern) {
			responses["404"] = problemResponse("No such object visible to the caller (another tenant's objects are never visible).")
		}
		if rt.Method == http.MethodPost || rt.Method == http.MethodPatch || rt.Method == http.MethodPut || rt.Method == http.MethodDelete {
			responses["409"] = problemResponse("The change conflicts with the current state (a duplicate name, the last Administrator).")
		}
		if why, ok := unprocessable[rt.OperationID]; ok {
			responses["422"] = problemResponse(why)
		}
		if rt.Auth.Unauthenticated() {
			busy := problemResponse("The server is busy: it is serving as many unauthenticated requests as it allows, or (attest) its queue of attestations waiting for their shared commit is full; retry after Retry-After seconds.")
			busy["headers"] = obj{"Retry-After": obj{"description": "Seconds to wait before retrying.", "schema": obj{"type": "integer", "minimum": 0}}}
			responses["503"] = busy
		}
		if rt.Request != nil || rt.RawRequest {
			responses["413"] = problemResponse(fmt.Sprintf("The body is larger than the %d bytes this operation reads.", rt.BodyLimit()))
			responses["415"] = problemResponse("The body is not application/json.")
		}
		if rt.IfMatch != "" {
			responses["412"] = problemResponse("If-Match does not name the current version.")
		}
		if rt.IfMatch == "required" {
			responses["428"] = problemResponse("If-Match is missing.")
		}
		responses["500"] = problemResponse("The server failed; the request ID in X-Request-Id identifies it in the logs.")
		op["responses"] = responses

		path, ok := paths[OpenAPIPath(rt.Pattern)].(obj)
		if !ok {
			path = obj{}
			paths[OpenAPIPath(rt.Pattern)] = path
		}
		path[strings.ToLower(rt.Method)] = op
	}
	paths["/api/v1/openapi.json"] = obj{"get": obj{
		"operationId": "getOpenAPI", "summary": "This document", "tags": []string{"meta"},
		"responses": obj{"200": obj{"description": "The OpenAPI document", "content": obj{"application/json": obj{"schema": obj{"type": "object"}}}}},
	}}
	return obj{
		"openapi": "3.0.3",
		"info": obj{
			"title":       "moat management API",
			"version":     APIVersion,
			"description": "Tenants, products, device groups, members, tokens and the audit log of a moat security service. Errors are RFC 9457 problem details.",
			"license":     obj{"name": "Apache-2.0"},
		},
		"servers": []any{obj{"url": "/"}},
		"paths":   paths,
		"components": obj{
			"schemas": s.Components,
			"securitySchemes": obj{"bearerAuth": obj{
				"type": "http", "scheme": "bearer",
				"description": "An API token (moat_tok_...) from moat server's first start, createMember or createToken.",
			}},
		},
	}
}

func tagOf(pattern string) string {
	parts := strings.Split(strings.TrimPrefix(pattern, "/api/v1/"), "/")
	// The last literal segment names the resource.
	for i := len(parts) - 1; i >= 0; i-- {
		if !strings.HasPrefix(parts[i], "{") {
			return parts[i]
		}
	}
	return "meta"
}

// commonFilterDescriptions describe the query filters whose meaning is more than a name
// match, for the operations filterDescriptions says nothing of.
var commonFilterDescriptions = map[string]string{
	"product": "The product, by name (case-insensitive); required for the fleet status and by the group and state filters.",
	"group":   "A device group of the product, by name (case-insensitive).",
	"state":   "Fleet state: never, refused, current, failed or pending (docs/fleet-status.md).",
}

// unprocessable names the operations that answer 422 (problem.Unprocessable), and why.
var unprocessable = map[string]string{
	"createDeployment": "ignore_window is set, but the image's security version is not above the current deployment's (only a security update with a new anti-rollback floor may ignore maintenance windows).",
}
