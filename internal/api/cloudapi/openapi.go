package cloudapi

import (
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strings"

	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/problem"
)

// APIVersion is the version of the cloud API in its OpenAPI document.
const APIVersion = "1.0.0"

type obj = map[string]any

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

var paramDescriptions = map[string]string{
	"device":     "Device ID: 64 lower-case hex digits, as the device's certificate names it.",
	"alert":      "Alert ID (a positive integer).",
	"diagnostic": "Diagnostics request ID (dgn_...).",
	"since":      "First time (RFC 3339), inclusive.",
	"until":      "End time (RFC 3339), exclusive.",
	"metric":     "Only this reading (drying_temp, ...).",
	"per":        "cycle (per cycle phase) or hour; default cycle.",
	"state":      "Only this state: open or cleared (alerts); open, scheduled, done or cancelled (service requests); reserved, out_of_stock, out_of_warranty, no_shop or failed (reservations).",
	"request":    "Service request ID (a positive integer).",
	"product":    "Only this product (DW100).",
	"wait":       "Hold the answer until the request finishes or this Go duration passes (at most 60s).",
}

// openAPIDocument is the OpenAPI 3.0 document of the cloud API, generated from routes()
// and the Go types of bodies (TestOpenAPI_Valid checks it with an independent OpenAPI
// implementation and validates real responses against it).
func openAPIDocument() obj {
	s := httpapi.NewSchemas("cloudapi")
	s.Names = map[reflect.Type]string{
		reflect.TypeFor[problem.Body]():         "Problem",
		reflect.TypeFor[diagnosticCreate]():     "DiagnosticCreate",
		reflect.TypeFor[serviceRequestUpdate](): "ServiceRequestUpdate",
		reflect.TypeFor[claimCodesCreate]():     "ClaimCodesCreate",
		reflect.TypeFor[saleRecord]():           "SaleRecord",
	}
	problemResponse := s.ProblemResponse(reflect.TypeFor[problem.Body]())
	paths := obj{}
	for _, rt := range routes() {
		op := obj{"operationId": rt.operationID, "summary": rt.summary, "tags": []string{tagOf(rt.pattern)}}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.pattern, -1) {
			params = append(params, obj{"name": m[1], "in": "path", "required": true,
				"description": paramDescriptions[m[1]], "schema": obj{"type": "string"}})
		}
		for _, q := range rt.query {
			params = append(params, obj{"name": q, "in": "query", "required": false, "description": paramDescriptions[q], "schema": obj{"type": "string"}})
		}
		if rt.list {
			params = append(params,
				obj{"name": "limit", "in": "query", "required": false, "description": "Page size, 1 to 1000 (default 100).",
					"schema": obj{"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
				obj{"name": "page_token", "in": "query", "required": false, "description": "next_page_token of the previous page.",
					"schema": obj{"type": "string"}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.body != nil {
			op["requestBody"] = obj{"required": true, "content": obj{"application/json": obj{"schema": s.Schema(rt.body)}}}
		}
		success := obj{"description": http.StatusText(rt.status)}
		switch {
		case rt.resp != nil && rt.list:
			success["content"] = obj{"application/json": obj{"schema": s.Page(rt.resp)}}
		case rt.resp != nil:
			success["content"] = obj{"application/json": obj{"schema": s.Schema(rt.resp)}}
		default:
			success["content"] = obj{"application/json": obj{"schema": obj{"type": "object"}}}
		}
		responses := obj{fmt.Sprint(rt.status): success}
		if rt.access != public {
			op["security"] = []any{obj{"bearerAuth": []string{}}}
			responses["400"] = problemResponse("The request is invalid; field names the offending parameter.")
			responses["401"] = problemResponse("No valid moat token of a member of this cloud's tenant.")
			unavailable := problemResponse("The security service cannot be reached to check the token, or too many checks are in flight; retry after Retry-After seconds.")
			unavailable["headers"] = obj{"Retry-After": obj{"description": "Seconds to wait before retrying.", "schema": obj{"type": "integer", "minimum": 0}}}
			responses["503"] = unavailable
		}
		if rt.access == operate {
			responses["403"] = problemResponse("The caller's role does not allow this (Contributor or Administrator needed).")
		}
		if rt.conflict {
			responses["409"] = problemResponse("The object's state refuses the change (a finished service request; a claim code another device holds).")
		}
		if pathParam.MatchString(rt.pattern) {
			responses["404"] = problemResponse("No such object.")
		}
		if rt.body != nil {
			limit := int64(maxBody)
			if rt.limit > 0 {
				limit = rt.limit
			}
			responses["413"] = problemResponse(fmt.Sprintf("The body is larger than the %d bytes this operation reads.", limit))
			responses["415"] = problemResponse("The body is not application/json.")
		}
		responses["500"] = problemResponse("The cloud failed; the request ID in X-Request-Id identifies it in the logs.")
		op["responses"] = responses
		path, ok := paths[rt.pattern].(obj)
		if !ok {
			path = obj{}
			paths[rt.pattern] = path
		}
		path[strings.ToLower(rt.method)] = op
	}
	return obj{
		"openapi": "3.0.3",
		"info": obj{
			"title":       "moat cloud API",
			"version":     APIVersion,
			"description": "The manufacturer cloud: devices, their telemetry and summaries, alerts, and remote diagnostics. Errors are RFC 9457 problem details.",
			"license":     obj{"name": "Apache-2.0"},
		},
		"servers": []any{obj{"url": "/"}},
		"paths":   paths,
		"components": obj{
			"schemas": s.Components,
			"securitySchemes": obj{"bearerAuth": obj{
				"type": "http", "scheme": "bearer",
				"description": "The caller's moat API token (the one 'moat login' holds); the cloud checks it with the security service.",
			}},
		},
	}
}

func tagOf(pattern string) string {
	parts := strings.Split(strings.TrimPrefix(pattern, "/api/v1/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if !strings.HasPrefix(parts[i], "{") && parts[i] != "openapi.json" {
			return parts[i]
		}
	}
	return "meta"
}
