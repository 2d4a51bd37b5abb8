// Package client is the Go client of moat's management API (/api/v1): tenants, members and
// API tokens, products, device groups and the audit log. It is the only way moat's own CLI
// talks to a server, and what examples and tests use.
//
// The package imports nothing of moat's internals: its wire types mirror the JSON of the API
// (a test in this package checks them against the server's route table), so it can be
// vendored on its own.
//
// What it trusts and enforces: it speaks HTTPS to the server and, given WithCACertPEM,
// trusts only that CA (otherwise the system roots); plain http is refused except to a
// loopback address, so a bearer token is never sent in clear over a network. It never
// follows redirects, so the token goes only to the configured server. Response bodies are
// read up to MaxResponseBytes. Failures the server reports as RFC 9457 problem details come
// back as *Error, whose Code is stable and meant to be branched on.
//
// A Client is safe for concurrent use by multiple goroutines.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxResponseBytes bounds every response body the client reads.
const MaxResponseBytes = 8 << 20

// DefaultUserAgent is sent unless WithUserAgent says otherwise.
const DefaultUserAgent = "moat-client-go/1"

// Client calls one moat server's management API.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	ua    string
}

type options struct {
	token    string
	caPEM    []byte
	insecure bool
	hc       *http.Client
	ua       string
}

// Option configures a Client.
type Option func(*options)

// WithToken authenticates every request with the API token (moat_<id>.<secret>).
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithCACertPEM trusts only the CA certificates in pem for the server's TLS certificate,
// instead of the system roots. Use it for a server with its own local CA.
func WithCACertPEM(pem []byte) Option {
	return func(o *options) { o.caPEM = bytes.Clone(pem) }
}

// WithInsecureSkipVerify turns off verification of the server's TLS certificate. Anyone on
// the network path can then read the token and forge responses: use it only against a
// throwaway server, never in production.
func WithInsecureSkipVerify() Option { return func(o *options) { o.insecure = true } }

// WithHTTPClient makes the client send requests with hc, whose transport then decides
// what TLS certificates to trust. It cannot be combined with WithCACertPEM or
// WithInsecureSkipVerify.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.hc = hc } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(o *options) { o.ua = ua } }

// New returns a client for the server at baseURL, such as https://moat.example.com:8443.
func New(baseURL string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	u, err := parseBase(baseURL)
	if err != nil {
		return nil, err
	}
	if o.hc != nil && (o.caPEM != nil || o.insecure) {
		return nil, errors.New("client: WithHTTPClient cannot be combined with WithCACertPEM or WithInsecureSkipVerify")
	}
	if o.caPEM != nil && o.insecure {
		return nil, errors.New("client: WithCACertPEM and WithInsecureSkipVerify contradict each other")
	}
	if strings.ContainsAny(o.token, " \t\r\n") {
		return nil, errors.New("client: the token contains white space")
	}
	hc := o.hc
	if hc == nil {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.caPEM != nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(o.caPEM) {
				return nil, errors.New("client: the CA PEM holds no certificate")
			}
			tlsCfg.RootCAs = pool
		}
		if o.insecure {
			tlsCfg.InsecureSkipVerify = true // asked for by name: WithInsecureSkipVerify
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsCfg
		tr.ResponseHeaderTimeout = time.Minute
		hc = &http.Client{
			Transport: tr,
			// Never follow a redirect: the bearer token belongs to this server only.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	ua := o.ua
	if ua == "" {
		ua = DefaultUserAgent
	}
	return &Client{base: u, token: o.token, hc: hc, ua: ua}, nil
}

func parseBase(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: server URL %q: %w", s, err)
	}
	switch {
	case u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return nil, fmt.Errorf("client: server URL %q must look like https://HOST[:PORT]", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("client: server URL %q must not have user info, a query or a fragment", s)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		return nil, fmt.Errorf("client: server URL %q: plain http is allowed only to a loopback address; use https", s)
	}
	return u, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BaseURL returns the server URL the client calls.
func (c *Client) BaseURL() string { return c.base.String() }

// request describes one API call.
type request struct {
	method  string
	path    []string // segments after /api/v1, escaped by the client
	query   url.Values
	body    any
	raw     []byte    // a body sent as is (signed TUF metadata), instead of body
	rawType string    // the media type of raw; default application/json
	stream  io.Reader // a body streamed as application/octet-stream, instead of body
	sink    io.Writer // a success response streamed here instead of decoded
	ifMatch int64     // 0: no If-Match header
	// ifNoneMatch, when set, is sent as If-None-Match; a 304 answer is errNotModified.
	ifNoneMatch string
}

// do sends req and decodes a success response into out (nil for none).
func (c *Client) do(ctx context.Context, req request, out any) error {
	u := *c.base
	raw, esc := make([]string, len(req.path)), make([]string, len(req.path))
	for i, s := range req.path {
		if s == "" || s == "." || s == ".." {
			return fmt.Errorf("client: empty or relative path segment %q in %s", s, strings.Join(req.path, "/"))
		}
		raw[i], esc[i] = s, url.PathEscape(s)
	}
	// Path and RawPath together keep a "/" inside a segment escaped.
	u.Path = strings.TrimRight(c.base.Path, "/") + "/api/v1/" + strings.Join(raw, "/")
	u.RawPath = strings.TrimRight(c.base.EscapedPath(), "/") + "/api/v1/" + strings.Join(esc, "/")
	if len(req.query) > 0 {
		u.RawQuery = req.query.Encode()
	}
	var body io.Reader
	if req.stream != nil {
		body = req.stream
	} else if req.raw != nil {
		body = bytes.NewReader(req.raw)
	} else if req.body != nil {
		b, err := json.Marshal(req.body)
		if err != nil {
			return fmt.Errorf("client: encode %s body: %w", req.method, err)
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	hr.Header.Set("Accept", "application/json, application/problem+json")
	hr.Header.Set("User-Agent", c.ua)
	if req.body != nil || req.raw != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.raw != nil && req.rawType != "" {
		hr.Header.Set("Content-Type", req.rawType)
	}
	if req.stream != nil {
		hr.Header.Set("Content-Type", "application/octet-stream")
	}
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	if req.ifMatch != 0 {
		hr.Header.Set("If-Match", ETag(req.ifMatch))
	}
	if req.ifNoneMatch != "" {
		hr.Header.Set("If-None-Match", req.ifNoneMatch)
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.method, u.Path, err)
	}
	defer resp.Body.Close()
	if req.ifNoneMatch != "" && resp.StatusCode == http.StatusNotModified {
		return errNotModified
	}
	if req.sink != nil && resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		n, err := io.Copy(req.sink, resp.Body)
		if err != nil {
			return fmt.Errorf("%s %s: read response: %w", req.method, u.Path, err)
		}
		if p, ok := out.(*int64); ok {
			*p = n
		}
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", req.method, u.Path, err)
	}
	if len(data) > MaxResponseBytes {
		return fmt.Errorf("%s %s: response larger than %d bytes", req.method, u.Path, MaxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp, data)
	}
	if out == nil {
		return nil
	}
	if p, ok := out.(*[]byte); ok {
		*p = data // a file served as is (JSON metadata or a PEM chain)
		return nil
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return fmt.Errorf("%s %s: response is %q, not application/json", req.method, u.Path, resp.Header.Get("Content-Type"))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", req.method, u.Path, err)
	}
	return nil
}

// pemType is the media type of PEM bodies.
const pemType = "application/x-pem-file"

// ETag is the entity tag of an object version, as the server sends it and If-Match takes it.
func ETag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// listQuery turns list options into query parameters.
func listQuery(o ListOptions) url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.PageToken != "" {
		q.Set("page_token", o.PageToken)
	}
	if o.Name != "" {
		q.Set("name", o.Name)
	}
	if o.Product != "" {
		q.Set("product", o.Product)
	}
	if o.Group != "" {
		q.Set("group", o.Group)
	}
	if o.State != "" {
		q.Set("state", o.State)
	}
	return q
}
