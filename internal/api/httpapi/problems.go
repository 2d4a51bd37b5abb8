package httpapi

import (
	"errors"
	"strings"

	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
)

// StoreProblem maps store errors to problems. what names the object for NotFound.
func StoreProblem(err error, what, id string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return problem.New(problem.NotFound, what+"_not_found", "no %s %s", strings.ReplaceAll(what, "_", " "), id)
	case errors.Is(err, store.ErrStale):
		return &problem.Error{Kind: problem.PreconditionFailed, Code: "etag_mismatch", Field: "If-Match",
			Detail: "the object changed since you read it; read it again and retry", Err: err}
	case errors.Is(err, store.ErrConflict):
		return &problem.Error{Kind: problem.Conflict, Code: "name_taken", Field: "name",
			Detail: "another " + strings.ReplaceAll(what, "_", " ") + " in the same scope already has this name", Err: err}
	case errors.Is(err, store.ErrInUse):
		return &problem.Error{Kind: problem.Conflict, Code: what + "_in_use", Detail: "the " + what + " is still in use", Err: err}
	}
	if p, ok := errors.AsType[*problem.Error](err); ok {
		return p
	}
	return problem.Wrap(err)
}

// Truncate shortens a caller's string for a problem detail.
func Truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
