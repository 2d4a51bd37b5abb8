package cli

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/problem"
)

// Exit codes of API problems, one per problem kind (problem.Kind.ExitCode); TestExitCodes
// checks that they agree.
const (
	ExitInvalid         = 3
	ExitUnauthenticated = 4
	ExitForbidden       = 5
	ExitNotFound        = 6
	ExitConflict        = 7
	ExitPrecondition    = 8
	ExitUnavailable     = 9
	ExitServer          = 10
)

// exitCodes documents every exit code; docs/cli.md is generated from it.
var exitCodes = []struct {
	Code    int
	Meaning string
}{
	{ExitOK, "success"},
	{ExitError, "any other error: the server cannot be reached, a local file cannot be read or written"},
	{ExitUsage, "usage: unknown command or flag, missing or malformed argument or flag value, no tenant selected"},
	{ExitInvalid, "the server refused the request as invalid (HTTP 400, 413, 415, 422)"},
	{ExitUnauthenticated, "not logged in, or the token is wrong, expired or revoked (HTTP 401)"},
	{ExitForbidden, "your role does not allow this (HTTP 403)"},
	{ExitNotFound, "no such object, or one you may not see; also a name that matches nothing (HTTP 404)"},
	{ExitConflict, "conflict: the name is taken, or the change would leave no Administrator (HTTP 409)"},
	{ExitPrecondition, "the object changed since it was read; run the command again (HTTP 412, 428)"},
	{ExitUnavailable, "the server is not ready; try again shortly (HTTP 503)"},
	{ExitServer, "the server failed (HTTP 5xx); its log has the cause under the request ID"},
}

// exitForStatus maps an HTTP status to an exit code through the problem kind the server
// would have used for it.
func exitForStatus(status int) int {
	if status < 400 {
		return ExitError
	}
	return problem.KindForStatus(status).ExitCode()
}

// cliError is a failure found by the CLI itself, with its exit code and what to do next.
type cliError struct {
	code int
	msg  string
	hint string
}

func (e *cliError) Error() string { return e.msg }

// hints says what to do next after a problem, by code and then by status.
var hints = map[string]string{
	"unauthenticated":            "run 'moat login' with a valid token",
	"role_required":              "ask an Administrator of the tenant for a stronger role",
	"platform_operator_required": "log in with a platform-operator token",
	"tenant_not_found":           "run 'moat tenant list' to see the tenants you can use",
	"product_not_found":          "run 'moat product list' to see the products",
	"device_group_not_found":     "run 'moat device-group list --product PRODUCT' to see the groups",
	"user_not_found":             "run 'moat member list' to see the members",
	"token_not_found":            "run 'moat token list' to see your tokens",
	"name_taken":                 "choose another name",
	"etag_mismatch":              "someone else changed it since it was read; run the command again",
	"last_administrator":         "make another member Administrator first",
	"device_not_found":           "run 'moat device list' to see the tenant's devices",
	"device_registered":          "a device is registered once; give its ID to the tenant that claims it",
	"image_not_found":            "run 'moat image list' to see the published images",
	"wrong_product":              "deploy an image made for the group's product",
	"ca_pending":                 "the platform operator certifies it with 'moat platform ca-sign'",
	"platform_not_initialized":   "the platform operator runs 'moat platform init' (or 'moat platform ca-certificate')",
	"bad_root_certificate":       "upload the certificate of the platform's root key (the --keys directory of 'moat platform init')",
}

var statusHints = map[int]string{
	http.StatusServiceUnavailable: "the server is starting or shutting down; try again shortly",
}

// report prints err for the user and returns the exit code.
func report(w io.Writer, err error) int {
	if errors.Is(err, errHelpShown) {
		return ExitOK
	}
	if e, ok := errors.AsType[*client.Error](err); ok {
		msg := e.Detail
		if msg == "" {
			msg = e.Error()
		}
		if e.Field != "" && e.Field != "If-Match" {
			msg += " (field " + e.Field + ")"
		}
		fmt.Fprintf(w, "moat: %s\n", msg)
		if len(e.Errors) > 1 {
			for _, fe := range e.Errors {
				fmt.Fprintf(w, "  %s: %s\n", fe.Field, fe.Detail)
			}
		}
		hint, ok := hints[e.Code]
		if !ok {
			hint = statusHints[e.Status]
		}
		if hint != "" {
			fmt.Fprintf(w, "hint: %s\n", hint)
		}
		if e.Status >= 500 && e.RequestID != "" {
			fmt.Fprintf(w, "request ID: %s\n", e.RequestID)
		}
		return exitForStatus(e.Status)
	}
	if e, ok := errors.AsType[*cliError](err); ok {
		fmt.Fprintf(w, "moat: %s\n", e.msg)
		if e.hint != "" {
			fmt.Fprintf(w, "hint: %s\n", e.hint)
		}
		return e.code
	}
	fmt.Fprintf(w, "moat: %v\n", err)
	if _, ok := errors.AsType[usageError](err); ok {
		return ExitUsage
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		fmt.Fprintln(w, "hint: the server's certificate is not trusted; log in again with --ca-cert and the server's CA certificate")
	}
	return ExitError
}
