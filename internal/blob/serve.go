package blob

import (
	"fmt"
	"net/http"
	"time"
)

// ETag returns the strong entity tag under which d is served: the quoted canonical digest.
// A blob never changes, so the tag never goes stale and a client may name it in If-Range
// before it has seen a response.
func ETag(d Digest) string { return `"` + d.String() + `"` }

// Serve writes blob d from s as the response to r. It supports GET and HEAD, single and
// multiple byte ranges (Range, If-Range) and conditional requests (If-None-Match gives 304),
// through http.ServeContent. The response is marked cacheable by any cache for a year and
// immutable, with a strong ETag (see ETag), Content-Type application/octet-stream and
// X-Content-Type-Options nosniff.
//
// Serve does no authorization: the caller must already have decided that the requester
// may read d (rule 3: another tenant's blob is NotFound, and knowing a digest is not
// authority). Serve returns an error (wrapping ErrNotFound for an unknown digest) only
// when it has written nothing, so the caller can render it as a problem document; the
// caching headers are set only on success, never on an error response.
func Serve(w http.ResponseWriter, r *http.Request, s Store, d Digest) error {
	f, err := s.Open(r.Context(), d)
	if err != nil {
		return fmt.Errorf("serve blob %s: %w", d, err)
	}
	defer f.Close()
	h := w.Header()
	h.Set("ETag", ETag(d))
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	// Set before ServeContent so that it does not sniff the content.
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	// No Last-Modified: the zero time leaves it out, and the ETag is the validator.
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

// Handler serves the blob that lookup names for each request with Serve. Errors from lookup
// (for example a malformed digest, or a digest the requester may not read) and from Serve
// go to onError (required), which renders them; the handler writes nothing else. lookup is where
// authorization happens: Handler itself does none.
func Handler(s Store, lookup func(r *http.Request) (Digest, error), onError func(w http.ResponseWriter, r *http.Request, err error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := lookup(r)
		if err == nil {
			err = Serve(w, r, s, d)
		}
		if err != nil {
			onError(w, r, err)
		}
	})
}
