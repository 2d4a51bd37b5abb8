package outbox

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Webhooks follow the Standard Webhooks specification (standardwebhooks.com): the
// headers webhook-id (the outbox row's key, the same on every retry, so a receiver keeps
// one event per id), webhook-timestamp (Unix seconds of this attempt) and
// webhook-signature ("v1,<base64 of HMAC-SHA256 over id.timestamp.body>", with the
// secret's decoded bytes as key; several space-separated during a rotation).

// Webhook limits.
const (
	WebhookTimeout          = 10 * time.Second
	MaxWebhookResponseBytes = 64 << 10
	// MaxWebhookBodyBytes bounds an event a receiver accepts (Verify).
	MaxWebhookBodyBytes = 64 << 10
	// DefaultWebhookTolerance is how far a webhook-timestamp may be from the receiver's
	// clock.
	DefaultWebhookTolerance = 5 * time.Minute
	// MaxWebhookEndpoints bounds the configured endpoints.
	MaxWebhookEndpoints = 32
	secretPrefix        = "whsec_"
)

// Webhook headers.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// Endpoint is a configured webhook receiver.
type Endpoint struct {
	// Name is what WebhookPayload.Endpoint and the rules name.
	Name string
	// URL is https, or http only to a loopback address.
	URL string
	// Secret is "whsec_" and the base64 of 24 to 64 random bytes. Never logged.
	Secret Secret
}

// Secret is a webhook signing secret; it redacts itself when printed or logged.
type Secret string

func (Secret) String() string { return "[redacted]" }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

var endpointNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// WebhookConfig is the configured endpoints.
type WebhookConfig struct {
	Endpoints []Endpoint
}

// Validate reports every problem of c.
func (c WebhookConfig) Validate() error {
	var errs []error
	if len(c.Endpoints) > MaxWebhookEndpoints {
		errs = append(errs, fmt.Errorf("webhooks: at most %d endpoints", MaxWebhookEndpoints))
	}
	seen := map[string]bool{}
	for _, e := range c.Endpoints {
		if !endpointNameRE.MatchString(e.Name) {
			errs = append(errs, fmt.Errorf("webhook %q: name must be 1 to 32 lower-case letters, digits or '-'", e.Name))
		}
		if seen[e.Name] {
			errs = append(errs, fmt.Errorf("webhook %s: configured twice", e.Name))
		}
		seen[e.Name] = true
		if err := checkWebhookURL(e.URL); err != nil {
			errs = append(errs, fmt.Errorf("webhook %s: url: %w", e.Name, err))
		}
		if _, err := decodeSecret(string(e.Secret)); err != nil {
			errs = append(errs, fmt.Errorf("webhook %s: secret: %w", e.Name, err))
		}
	}
	return errors.Join(errs...)
}

func checkWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return errors.New("must be an absolute URL without user info or fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if loopbackHost(u.Hostname()) {
			return nil
		}
	}
	return errors.New("must be https (http only to a loopback address)")
}

// decodeSecret returns the key bytes of a "whsec_<base64>" secret.
func decodeSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, errors.New(`must start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, errors.New("must be whsec_ and the base64 of 24 to 64 bytes")
	}
	return key, nil
}

// Sign returns the webhook-signature value of body sent as id at ts.
func Sign(secret string, id string, ts time.Time, body []byte) (string, error) {
	key, err := decodeSecret(secret)
	if err != nil {
		return "", err
	}
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, ts.Unix(), body)), nil
}

func mac(key []byte, id string, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
	h.Write(body)
	return h.Sum(nil)
}

// NewWebhookClient returns the HTTP client webhook deliveries use: WebhookTimeout per
// request, no redirects (a redirect could carry the signed event somewhere unconfigured),
// no proxy from the environment.
func NewWebhookClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.MaxIdleConnsPerHost = 4
	return &http.Client{
		Timeout:   WebhookTimeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// WebhookHandler performs KindWebhook rows: the payload's event is POSTed as JSON to the
// named endpoint, signed, with the row's key as webhook-id. 2xx is done; 410 Gone and
// other 4xx are Permanent; 408, 429, 5xx, a redirect and network errors are retried (a
// Retry-After is honoured up to the worker's BackoffMax). now stamps webhook-timestamp.
// client nil means NewWebhookClient().
func WebhookHandler(cfg WebhookConfig, client *http.Client, now func() time.Time) (Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		return nil, errors.New("webhooks: now: required")
	}
	if client == nil {
		client = NewWebhookClient()
	}
	eps := map[string]Endpoint{}
	for _, e := range cfg.Endpoints {
		eps[e.Name] = e
	}
	return func(ctx context.Context, job Job) (string, error) {
		var p WebhookPayload
		if err := decodeStrict(job.Payload, &p); err != nil {
			return "", Permanent(fmt.Errorf("webhook payload: %w", err))
		}
		ep, ok := eps[p.Endpoint]
		if !ok {
			return "", Permanent(fmt.Errorf("webhook endpoint %q is not configured", p.Endpoint))
		}
		body, err := json.Marshal(p.Event)
		if err != nil {
			return "", Permanent(fmt.Errorf("webhook event: %w", err))
		}
		return deliver(ctx, client, ep, job.Key, now(), body)
	}, nil
}

func deliver(ctx context.Context, client *http.Client, ep Endpoint, id string, ts time.Time, body []byte) (string, error) {
	sig, err := Sign(string(ep.Secret), id, ts, body)
	if err != nil {
		return "", Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return "", Permanent(fmt.Errorf("webhook %s: %w", ep.Name, err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "moat-cloud-webhooks")
	req.Header.Set(HeaderWebhookID, id)
	req.Header.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(HeaderWebhookSignature, sig)
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("webhook %s: %w", ep.Name, redactURL(err))
	}
	defer resp.Body.Close()
	// Read (a bounded part of) the answer so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxWebhookResponseBytes))
	status := resp.StatusCode
	err = fmt.Errorf("webhook %s: answered %d", ep.Name, status)
	switch {
	case status >= 200 && status < 300:
		return fmt.Sprintf("delivered to %s (%d)", ep.Name, status), nil
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), ts); ok {
			return "", RetryAfter(err, d)
		}
		return "", err
	case status >= 300 && status < 400:
		return "", fmt.Errorf("%w (redirects are not followed)", err)
	default: // 410 Gone and the other 4xx: a retry cannot change them
		return "", Permanent(err)
	}
}

// redactURL drops the URL from a client error: an endpoint's URL may carry a token.
func redactURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs >= 0 {
		return time.Duration(min(secs, 1<<31)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now), true
	}
	return 0, false
}

// Errors of Verify.
var (
	ErrWebhookSignature = errors.New("webhook signature does not match")
	ErrWebhookTimestamp = errors.New("webhook timestamp outside the tolerance")
)

// Verify checks a received webhook the way a receiver should, and returns its event: one
// v1 signature of the space-separated list must match (compared in constant time) before
// anything else is read, the timestamp must be within tolerance of now (0 means
// DefaultWebhookTolerance), and the body must be one WebhookEvent of at most
// MaxWebhookBodyBytes with no unknown fields. Attacked by TestVerify_* and FuzzVerify.
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) (WebhookEvent, error) {
	key, err := decodeSecret(secret)
	if err != nil {
		return WebhookEvent{}, fmt.Errorf("webhook secret: %w", err)
	}
	if tolerance <= 0 {
		tolerance = DefaultWebhookTolerance
	}
	if len(body) > MaxWebhookBodyBytes {
		return WebhookEvent{}, fmt.Errorf("webhook body larger than %d bytes", MaxWebhookBodyBytes)
	}
	id, tsText, sigs := h.Get(HeaderWebhookID), h.Get(HeaderWebhookTimestamp), h.Get(HeaderWebhookSignature)
	if id == "" || len(id) > 256 || len(sigs) > 4096 {
		return WebhookEvent{}, errors.New("webhook id or signature header missing or too long")
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return WebhookEvent{}, fmt.Errorf("%w: not a Unix time", ErrWebhookTimestamp)
	}
	want := mac(key, id, ts, body)
	ok := false
	for _, s := range strings.Fields(sigs) {
		v, b64, found := strings.Cut(s, ",")
		if !found || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			ok = true
		}
	}
	if !ok {
		return WebhookEvent{}, ErrWebhookSignature
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return WebhookEvent{}, ErrWebhookTimestamp
	}
	var ev WebhookEvent
	if err := decodeStrict(body, &ev); err != nil {
		return WebhookEvent{}, fmt.Errorf("webhook body: %w", err)
	}
	if ev.Type == "" {
		return WebhookEvent{}, errors.New("webhook body: type: required")
	}
	return ev, nil
}
