package shop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// Errors a caller branches on.
var (
	// ErrOutOfStock is a shop's 409 out-of-stock answer to a reservation.
	ErrOutOfStock = errors.New("out of stock")
	// ErrUnknownShop is a shop ID the shops file does not name.
	ErrUnknownShop = errors.New("shop not in the shops file")
)

// StatusError is a shop's answer other than success or out of stock.
type StatusError struct {
	Status int
	// Problem is the shop's problem document, zero when it sent none that decodes.
	Problem Problem
}

func (e *StatusError) Error() string {
	if e.Problem.Detail != "" {
		return fmt.Sprintf("shop answered %d: %s", e.Status, e.Problem.Detail)
	}
	return fmt.Sprintf("shop answered %d", e.Status)
}

// Temporary reports whether err is worth retrying with the same Idempotency-Key: a
// network error, a timeout, a reply that does not keep the contract, 408, 429 or a 5xx.
// An out-of-stock answer, 3xx (redirects are not followed), 400, 401, 403, 404, 409 and
// 422 are not: a retry cannot change them.
func Temporary(err error) bool {
	if err == nil || errors.Is(err, ErrOutOfStock) || errors.Is(err, ErrUnknownShop) {
		return false
	}
	if se, ok := errors.AsType[*StatusError](err); ok {
		return se.Status == http.StatusRequestTimeout || se.Status == http.StatusTooManyRequests || se.Status >= 500
	}
	return true
}

// ClientConfig shapes a Client.
type ClientConfig struct {
	// Timeout bounds one call, from dialling to the reply's last byte.
	Timeout time.Duration
	// UserAgent is sent with every call.
	UserAgent string
}

// DefaultClientConfig returns the defaults: 10 s per call.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{Timeout: 10 * time.Second, UserAgent: "moat-cloud"}
}

// Validate reports every problem of c.
func (c ClientConfig) Validate() error {
	var errs []error
	if c.Timeout < 100*time.Millisecond || c.Timeout > 5*time.Minute {
		errs = append(errs, errors.New("shop timeout: must be 100ms to 5m"))
	}
	if !printable(c.UserAgent, 100) {
		errs = append(errs, errors.New("shop user agent: printable, at most 100 bytes"))
	}
	return errors.Join(errs...)
}

// Client calls one shop's inventory service.
type Client struct {
	shop  Shop
	base  *url.URL
	token string
	http  *http.Client
	ua    string
}

// tokenRE is RFC 6750's b64token: what may follow "Bearer " in a header.
var tokenRE = regexp.MustCompile(`^[A-Za-z0-9._~+/-]+=*$`)

// ReadToken reads a bearer token file: one RFC 6750 token of at most MaxTokenBytes, a
// final newline allowed.
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxTokenBytes+2))
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if len(tok) > MaxTokenBytes || !tokenRE.MatchString(tok) {
		return "", fmt.Errorf("token file %s: must hold one bearer token of at most %d letters, digits or ._~+/-=", path, MaxTokenBytes)
	}
	return tok, nil
}

// NewClient returns a client of s, reading its token file.
func NewClient(s Shop, cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := CheckURL(s.URL); err != nil {
		return nil, fmt.Errorf("shop %s: url: %w", s.ID, err)
	}
	tok, err := ReadToken(s.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("shop %s: %w", s.ID, err)
	}
	base, _ := url.Parse(strings.TrimSuffix(s.URL, "/")) // checked by CheckURL
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = cfg.Timeout
	tr.MaxResponseHeaderBytes = 16 << 10
	return &Client{shop: s, base: base, token: tok, ua: cfg.UserAgent, http: &http.Client{
		Timeout:   cfg.Timeout,
		Transport: tr,
		// A redirect could carry the bearer token to another host: none is followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// Shop returns the shop the client calls.
func (c *Client) Shop() Shop { return c.shop }

func (c *Client) endpoint(path string) string {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawPath = ""
	return u.String()
}

// Part asks whether part is in stock.
func (c *Client) Part(ctx context.Context, part string) (Stock, error) {
	if !PartRE.MatchString(part) {
		return Stock{}, fmt.Errorf("part %q: not a part number", part)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint("/v1/parts/"+url.PathEscape(part)), nil)
	if err != nil {
		return Stock{}, err
	}
	status, body, err := c.do(req)
	if err != nil {
		return Stock{}, err
	}
	if status != http.StatusOK {
		return Stock{}, statusError(status, body)
	}
	st, err := DecodeStock(body)
	if err == nil && st.Part != part {
		err = fmt.Errorf("%w: stock of part %q, asked for %q", ErrMalformed, st.Part, part)
	}
	return st, err
}

// Reserve reserves one r.Part under key, the Idempotency-Key: the same key again returns
// the same reservation, so a call retried after a crash reserves one part.
func (c *Client) Reserve(ctx context.Context, key string, r ReservationRequest) (Reservation, error) {
	if !IdempotencyKeyRE.MatchString(key) {
		return Reservation{}, fmt.Errorf("idempotency key %q: 1 to %d letters, digits or _.:@-", key, MaxIdempotencyKeyBytes)
	}
	if !PartRE.MatchString(r.Part) {
		return Reservation{}, fmt.Errorf("part %q: not a part number", r.Part)
	}
	body, _ := json.Marshal(r) // plain strings: cannot fail
	if len(body) > MaxRequestBytes {
		return Reservation{}, fmt.Errorf("reservation request is %d bytes, more than %d", len(body), MaxRequestBytes)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint("/v1/reservations"), bytes.NewReader(body))
	if err != nil {
		return Reservation{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	status, reply, err := c.do(req)
	if err != nil {
		return Reservation{}, err
	}
	switch status {
	case http.StatusCreated, http.StatusOK:
	case http.StatusConflict:
		p, _ := DecodeProblem(reply)
		if p.Type == TypeOutOfStock {
			return Reservation{}, fmt.Errorf("part %s at shop %s: %w", r.Part, c.shop.ID, ErrOutOfStock)
		}
		return Reservation{}, &StatusError{Status: status, Problem: p}
	default:
		return Reservation{}, statusError(status, reply)
	}
	res, err := DecodeReservation(reply)
	if err == nil && res.Part != r.Part {
		err = fmt.Errorf("%w: reservation of part %q, asked for %q", ErrMalformed, res.Part, r.Part)
	}
	return res, err
}

func statusError(status int, body []byte) error {
	p, _ := DecodeProblem(body)
	return &StatusError{Status: status, Problem: p}
}

// do sends req with the token and reads at most MaxReplyBytes of the reply; a 2xx reply
// must be application/json.
func (c *Client) do(req *http.Request) (int, []byte, error) {
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", c.ua)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("shop %s: %w", c.shop.ID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes+1))
	if err != nil {
		return 0, nil, fmt.Errorf("shop %s: read reply: %w", c.shop.ID, err)
	}
	if len(body) > MaxReplyBytes {
		return 0, nil, fmt.Errorf("shop %s: %w: reply larger than %d bytes", c.shop.ID, ErrMalformed, MaxReplyBytes)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			return 0, nil, fmt.Errorf("shop %s: %w: content type %q, want application/json", c.shop.ID, ErrMalformed, resp.Header.Get("Content-Type"))
		}
	}
	return resp.StatusCode, body, nil
}

// Directory holds a Client per shop of a shops file.
type Directory struct {
	clients map[string]*Client
}

// NewDirectory makes a Client of each shop, reading their tokens; every problem is
// reported.
func NewDirectory(shops []Shop, cfg ClientConfig) (*Directory, error) {
	d := &Directory{clients: make(map[string]*Client, len(shops))}
	var errs []error
	for _, s := range shops {
		if _, dup := d.clients[s.ID]; dup {
			errs = append(errs, fmt.Errorf("shop %s: named twice", s.ID))
			continue
		}
		c, err := NewClient(s, cfg)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.clients[s.ID] = c
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return d, nil
}

// Client returns the client of shop id.
func (d *Directory) Client(id string) (*Client, bool) {
	if d == nil {
		return nil, false
	}
	c, ok := d.clients[id]
	return c, ok
}

// Reserve reserves a part at shop id (see Client.Reserve); a shop the file does not name
// is ErrUnknownShop.
func (d *Directory) Reserve(ctx context.Context, id, key string, r ReservationRequest) (Reservation, error) {
	c, ok := d.Client(id)
	if !ok {
		return Reservation{}, fmt.Errorf("shop %s: %w", id, ErrUnknownShop)
	}
	return c.Reserve(ctx, key, r)
}
