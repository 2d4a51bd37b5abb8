package mgmt

import (
	"slices"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
)

// Error issues: the tenant's error reports grouped by signature (errreport.Signature),
// read from the aggregates the store keeps (store.ErrorIssues). Reads only, for Readers;
// every query runs under the path's tenant (rule 3), and an issue ID of another tenant is
// 404 like an unknown one (TestAPI_CrossTenantIsNotFound, TestErrorIssues_OtherTenantIsNotFound).

// issueFilter reads the list's filters: product (a product name: the issues of its apps'
// images, by the catalog), kind, since (RFC 3339) and sort.
func (a *API) issueFilter(c *call) (errreport.IssueFilter, error) {
	q := c.r.URL.Query()
	var f errreport.IssueFilter
	bad := func(field, detail string) error {
		return &problem.Error{Kind: problem.Invalid, Code: "invalid_filter", Field: field, Detail: detail}
	}
	if k := q.Get("kind"); k != "" {
		if !slices.Contains(errreport.Kinds, errreport.Kind(k)) {
			return f, bad("kind", "kind must be one of app_crash, update_failed, attestation_refused, capability_denied, agent")
		}
		f.Kind = errreport.Kind(k)
	}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || t.Year() < 1970 || t.Year() > 9999 {
			return f, bad("since", "since must be a time in RFC 3339 (2026-01-02T15:04:05Z)")
		}
		f.Since = t
	}
	switch s := errreport.IssueSort(q.Get("sort")); s {
	case "", errreport.ByLastSeen, errreport.ByReports:
		f.Sort = s
	default:
		return f, bad("sort", "sort must be last_seen or reports")
	}
	if name := q.Get("product"); name != "" {
		if len(name) > 64 {
			return f, bad("product", "product must be a product name")
		}
		var pname string
		err := a.readTenant(c, func(tt store.TenantTx) error {
			p, err := tt.Products().GetByName(c.ctx, name)
			pname = p.Name
			return err
		})
		if err != nil {
			return f, storeProblem(err, "product", truncate(name))
		}
		cat, err := a.repo.Catalog(c.ctx, c.tenant)
		if err != nil {
			return f, problem.Wrap(err)
		}
		// The product's apps by their image name (apps/<name>): every version of an app
		// published for it. A product with no published app has no issues.
		f.ImageNames = []string{}
		for _, im := range cat.Images {
			if im.Kind == "app" && strings.EqualFold(im.Product, pname) {
				if n := errreport.ImageName(im.Path); !slices.Contains(f.ImageNames, n) {
					f.ImageNames = append(f.ImageNames, n)
				}
			}
		}
		slices.Sort(f.ImageNames)
	}
	return f, nil
}

func (a *API) listErrorIssues(c *call) (any, error) {
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	f, err := a.issueFilter(c)
	if err != nil {
		return nil, err
	}
	if p.After != "" {
		if _, _, ok := errreport.ParseSortKey(p.After); !ok {
			return nil, invalidPageToken()
		}
	}
	var items []errreport.Issue
	err = a.readTenant(c, func(tt store.TenantTx) error {
		items, err = tt.ErrorReports().ListIssues(c.ctx, f, p)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "error_issue", "")
	}
	return listOf(items, p, f.Sort.SortKey), nil
}

// issueID reads {issue}; a malformed one is 404 like an unknown one.
func issueID(c *call) (string, error) {
	id := c.r.PathValue("issue")
	if !errreport.ValidIssueID(id) {
		return "", problem.New(problem.NotFound, "error_issue_not_found", "no error issue %s", truncate(id))
	}
	return id, nil
}

func (a *API) getErrorIssue(c *call) (any, error) {
	id, err := issueID(c)
	if err != nil {
		return nil, err
	}
	var d errreport.IssueDetail
	err = a.readTenant(c, func(tt store.TenantTx) error {
		d, err = tt.ErrorReports().GetIssue(c.ctx, id, c.now)
		return err
	})
	return d, storeProblem(err, "error_issue", id)
}

func (a *API) listErrorIssueReports(c *call) (any, error) {
	id, err := issueID(c)
	if err != nil {
		return nil, err
	}
	p, err := c.page()
	if err != nil {
		return nil, err
	}
	if p.After != "" {
		dev, rid, ok := strings.Cut(p.After, "/")
		if !ok || !identity.ValidID(dev) || !errreport.ValidID(rid) {
			return nil, invalidPageToken()
		}
	}
	var items []errreport.Record
	err = a.readTenant(c, func(tt store.TenantTx) error {
		// An issue the tenant does not have is 404, not an empty list.
		if _, err := tt.ErrorReports().GetIssue(c.ctx, id, c.now); err != nil {
			return err
		}
		items, err = tt.ErrorReports().ListIssueReports(c.ctx, id, p)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "error_issue", id)
	}
	return listOf(items, p, store.ReportKey), nil
}

func invalidPageToken() error {
	return &problem.Error{Kind: problem.Invalid, Code: "invalid_page_token", Field: "page_token",
		Detail: "page_token is not one this server returned"}
}
