package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The manufacturer cloud's API (`moat cloud`, docs/cloud.md). A Client made with New on
// the cloud's URL and the caller's moat token calls it; the cloud checks the token with
// the security service.

// CloudDevice is a device the cloud has seen connect.
type CloudDevice struct {
	ID           string    `json:"id"`
	Product      string    `json:"product"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	CertNotAfter time.Time `json:"cert_not_after"`
}

// Reading is one stored telemetry reading.
type Reading struct {
	Time       time.Time `json:"time"`
	ReceivedAt time.Time `json:"received_at"`
	Cycle      string    `json:"cycle,omitempty"`
	Phase      string    `json:"phase,omitempty"`
	Metric     string    `json:"metric"`
	Value      float64   `json:"value"`
	Unit       string    `json:"unit"`
}

// Summary is the downsampled figures of one metric over one cycle or one hour.
type Summary struct {
	// Period is "cycle" or "hour"; Key is the cycle ID or the hour's start (RFC 3339).
	Period string `json:"period"`
	Key    string `json:"key"`
	// Phase is the cycle's phase the figures are of (cycle summaries only).
	Phase  string    `json:"phase,omitempty"`
	Metric string    `json:"metric"`
	Unit   string    `json:"unit"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Avg    float64   `json:"avg"`
	Count  int64     `json:"count"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
}

// CloudEvent is one event a device sent (a cycle that ended, with what it used).
type CloudEvent struct {
	Time       time.Time               `json:"time"`
	ReceivedAt time.Time               `json:"received_at"`
	Name       string                  `json:"name"`
	Cycle      string                  `json:"cycle,omitempty"`
	Readings   map[string]EventReading `json:"readings,omitempty"`
	Message    string                  `json:"message,omitempty"`
}

// EventReading is one figure of an event.
type EventReading struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Alert is one episode of a rule firing for a device.
type Alert struct {
	ID       string `json:"id"`
	Product  string `json:"product"`
	Device   string `json:"device"`
	Rule     string `json:"rule"`
	Severity string `json:"severity"`
	// State is "open" or "cleared".
	State     string     `json:"state"`
	OpenedAt  time.Time  `json:"opened_at"`
	ClearedAt *time.Time `json:"cleared_at,omitempty"`
	Value     float64    `json:"value"`
	Message   string     `json:"message"`
	// Evidence is the readings that fired the rule, as the rules engine recorded them.
	Evidence json.RawMessage `json:"evidence,omitempty"`
	// Diagnostics lists the diagnostics the alert's actions ran.
	Diagnostics []Diagnostic `json:"diagnostics,omitempty"`
}

// Diagnostic is one remote diagnostics request and its outcome.
type Diagnostic struct {
	ID          string          `json:"id"`
	Device      string          `json:"device"`
	Command     string          `json:"command"`
	Args        json.RawMessage `json:"args,omitempty"`
	RequestedBy string          `json:"requested_by"`
	RequestedAt time.Time       `json:"requested_at"`
	Deadline    time.Time       `json:"deadline"`
	// State is pending, succeeded, failed or timed_out.
	State      string          `json:"state"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	AlertID    string          `json:"alert_id,omitempty"`
}

// DiagnosticCreate asks a device to run a diagnostic.
type DiagnosticCreate struct {
	Command string          `json:"command"`
	Args    json.RawMessage `json:"args,omitempty"`
	// Timeout is a Go duration ("2m"); empty takes the cloud's default.
	Timeout string `json:"timeout,omitempty"`
}

// TelemetryQuery selects readings.
type TelemetryQuery struct {
	Since, Until time.Time // zero: unbounded
	Metric       string    // empty: every metric
	Limit        int
	PageToken    string
}

// AlertQuery selects alerts.
type AlertQuery struct {
	State, Device, Product string
	Limit                  int
	PageToken              string
}

// ListCloudDevices lists the devices the cloud has seen.
func (c *Client) ListCloudDevices(ctx context.Context, opts ListOptions) (Page[CloudDevice], error) {
	var out Page[CloudDevice]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"devices"}, query: listQuery(opts)}, &out)
	return out, err
}

// ListTelemetry lists a device's readings, oldest first.
func (c *Client) ListTelemetry(ctx context.Context, device string, q TelemetryQuery) (Page[Reading], error) {
	v := url.Values{}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.Metric != "" {
		v.Set("metric", q.Metric)
	}
	setPage(v, q.Limit, q.PageToken)
	var out Page[Reading]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"devices", device, "telemetry"}, query: v}, &out)
	return out, err
}

// ListSummaries lists a device's per-cycle or hourly summaries (per: "cycle" or "hour")
// since a time, oldest first.
func (c *Client) ListSummaries(ctx context.Context, device, per string, since time.Time, limit int) ([]Summary, error) {
	v := url.Values{"per": {per}}
	if !since.IsZero() {
		v.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	setPage(v, limit, "")
	var out Page[Summary]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"devices", device, "summaries"}, query: v}, &out)
	return out.Items, err
}

// ListEvents lists a device's events since a time, oldest first.
func (c *Client) ListEvents(ctx context.Context, device string, since time.Time, limit int) ([]CloudEvent, error) {
	v := url.Values{}
	if !since.IsZero() {
		v.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	setPage(v, limit, "")
	var out Page[CloudEvent]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"devices", device, "events"}, query: v}, &out)
	return out.Items, err
}

// ListAlerts lists alerts, newest first.
func (c *Client) ListAlerts(ctx context.Context, q AlertQuery) (Page[Alert], error) {
	v := url.Values{}
	for k, s := range map[string]string{"state": q.State, "device": q.Device, "product": q.Product} {
		if s != "" {
			v.Set(k, s)
		}
	}
	setPage(v, q.Limit, q.PageToken)
	var out Page[Alert]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"alerts"}, query: v}, &out)
	return out, err
}

// GetAlert returns one alert with its diagnostics.
func (c *Client) GetAlert(ctx context.Context, id string) (Alert, error) {
	var out Alert
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"alerts", id}}, &out)
	return out, err
}

// RunDiagnostic asks the device to run a diagnostic and returns the pending request;
// GetDiagnostic (or WaitDiagnostic) tells its outcome.
func (c *Client) RunDiagnostic(ctx context.Context, device string, req DiagnosticCreate) (Diagnostic, error) {
	var out Diagnostic
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"devices", device, "diagnostics"}, body: req}, &out)
	return out, err
}

// GetDiagnostic returns a diagnostics request. With wait > 0 the cloud holds the answer
// until the request finishes or wait passes (at most 60 s).
func (c *Client) GetDiagnostic(ctx context.Context, id string, wait time.Duration) (Diagnostic, error) {
	var v url.Values
	if wait > 0 {
		v = url.Values{"wait": {wait.String()}}
	}
	var out Diagnostic
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"diagnostics", id}, query: v}, &out)
	return out, err
}

// ListDiagnostics lists diagnostics requests, newest first; device filters when not empty.
func (c *Client) ListDiagnostics(ctx context.Context, device string, opts ListOptions) (Page[Diagnostic], error) {
	v := listQuery(opts)
	if device != "" {
		v.Set("device", device)
	}
	var out Page[Diagnostic]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"diagnostics"}, query: v}, &out)
	return out, err
}

func setPage(v url.Values, limit int, token string) {
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	if token != "" {
		v.Set("page_token", token)
	}
}
