// Package httpapi is the HTTP core that every audience of moat's API shares: the route table
// type, the authorization rules and audiences, the pieces of the request wrapper (request
// IDs, the status-recording writer, body limits, the access log and metrics), strict body
// decoding, paging tokens, ETag/If-Match and the problem responses (RFC 9457, through
// internal/problem). The management API and the device API are its audiences today
// (internal/api/mgmt declares their routes and handlers); a console or cloud audience
// declares its own table of Route values and is held to the same rules.
//
// What it enforces:
//   - Default deny: CheckRoutes refuses a table with a route that has no authorization rule,
//     a tenant route without {tenant} in its path or a minimum role, a device route that
//     takes its tenant from the path, or an unauthenticated write (rule 3).
//   - Bounded bodies: every route that accepts a body declares how much it reads (a typed
//     JSON body defaults to DefaultMaxBodyBytes; a raw body must declare its own, and an
//     unauthenticated route reads at most MaxUnauthenticatedBodyBytes). Begin bounds the
//     body before the handler runs, a Content-Length over the limit is refused before a
//     byte is read, and a refused body closes the connection instead of being drained
//     (issue 10 defect 2; attacked by mgmt's TestAPI_RejectsOversizedAttestation and
//     TestRoutes_DeclareBodyLimits).
//   - Strict decoding: DecodeBody accepts valid UTF-8 holding one JSON object with no
//     unknown fields, then runs Validate (rule 5; fuzzed by mgmt's FuzzDecodeBody).
//   - Bounded unauthenticated work: a Limiter caps the requests served at once on routes
//     that need no credentials; past the cap they get 503 with Retry-After (attacked by
//     mgmt's TestAPI_CapsUnauthenticatedRequests).
//
// It trusts nothing from the request: authentication and authorization decisions are the
// audience's, taken by its wrapper from the rules declared here.
//
// Concurrency: routes are values built once; a Limiter and Metrics are safe for concurrent
// use; an Exchange and its StatusWriter belong to one request and its goroutine.
package httpapi
