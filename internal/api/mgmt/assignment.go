package mgmt

import (
	"net/http"

	"github.com/moat-iot/moat/internal/problem"
)

// getAssignment answers a device's update check: its assignment signed by the director
// key, with a strong ETag (fleet.AssignmentETag); or 304 Not Modified, with no body, when
// If-None-Match names the assignment the device holds and it is still current
// (fleet.CheckAssignment, which keeps the rules of when that may be said).
func (a *API) getAssignment(c *call) (any, error) {
	res, err := a.fleet.CheckAssignment(c.ctx, *c.device, c.r.Header.Get("If-None-Match"))
	if err != nil {
		return nil, problem.Wrap(err)
	}
	// The canonical key, set directly: Header.Set would canonicalize "ETag" on every check.
	c.w.Header()["Etag"] = []string{res.ETag}
	if res.NotModified {
		c.status = http.StatusNotModified
		return nil, nil
	}
	return rawJSON(res.Signed), nil
}
