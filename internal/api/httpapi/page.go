package httpapi

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"

	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
)

// List is the shape of every list response.
type List[T any] struct {
	Items         []T    `json:"items"`
	NextPageToken string `json:"next_page_token,omitempty"`
}

// Page sizes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// ParsePage reads limit and page_token. The token is the opaque encoding of the last ID
// seen. The page asks for one more item than the caller wants, so that ListOf learns
// whether another page follows.
func ParsePage(r *http.Request) (store.Page, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	p := store.Page{Limit: DefaultPageSize}
	if err != nil {
		return p, &problem.Error{Kind: problem.Invalid, Code: "invalid_query", Field: "query",
			Detail: "the query string is malformed"}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			return p, &problem.Error{Kind: problem.Invalid, Code: "invalid_limit", Field: "limit",
				Detail: "limit must be a whole number from 1 to 1000"}
		}
		p.Limit = n
	}
	if s := q.Get("page_token"); s != "" {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(b) == 0 || len(b) > 128 {
			return p, &problem.Error{Kind: problem.Invalid, Code: "invalid_page_token", Field: "page_token",
				Detail: "page_token is not one this server returned"}
		}
		p.After = string(b)
	}
	p.Limit++
	return p, nil
}

// ListOf trims the extra item ParsePage asked for and sets the next page token.
func ListOf[T any](items []T, p store.Page, id func(T) string) List[T] {
	if items == nil {
		items = []T{}
	}
	if len(items) < p.Limit {
		return List[T]{Items: items}
	}
	items = items[:p.Limit-1]
	return List[T]{Items: items, NextPageToken: base64.RawURLEncoding.EncodeToString([]byte(id(items[len(items)-1])))}
}
