package httpapi

import (
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/moat-iot/moat/internal/problem"
)

// VersionOf finds the Version field of an object response, for its ETag.
func VersionOf(v any) (int64, bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return 0, false
	}
	f := rv.FieldByName("Version")
	if !f.IsValid() || f.Kind() != reflect.Int64 {
		return 0, false
	}
	return f.Int(), true
}

// ETag is the strong entity tag of a version.
func ETag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// CheckIfMatch enforces a route's If-Match rule ("required", "optional" or "") against the
// stored version. A weak tag never matches (RFC 9110 section 13.1.1 uses strong comparison).
func CheckIfMatch(r *http.Request, rule string, current int64) error {
	h := r.Header.Get("If-Match")
	if h == "" {
		if rule == "required" {
			return &problem.Error{Kind: problem.PreconditionRequired, Code: "if_match_required", Field: "If-Match",
				Detail: "send If-Match with the ETag of the version you read, so concurrent edits cannot overwrite each other"}
		}
		return nil
	}
	want := ETag(current)
	for _, tag := range strings.Split(h, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || tag == want {
			return nil
		}
	}
	return &problem.Error{Kind: problem.PreconditionFailed, Code: "etag_mismatch", Field: "If-Match",
		Detail: "the object changed since you read it (current ETag " + want + "); read it again and retry"}
}
