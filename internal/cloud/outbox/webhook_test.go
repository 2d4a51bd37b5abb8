package outbox_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
)

// secret is 32 random-looking bytes in the whsec_ form.
var secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

// The Standard Webhooks Go library's published test vector (libraries/go,
// TestSymmetricWebhookSign): an independent check of Sign and Verify.
func TestSign_MatchesStandardWebhooksVector(t *testing.T) {
	t.Parallel()
	const (
		key  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id   = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	ts := time.Unix(1614265330, 0)
	body := []byte(`{"test": 2432232314}`)
	got, err := outbox.Sign(key, id, ts, body)
	if err != nil || got != want {
		t.Errorf("Sign(vector) = %q, %v, want %q", got, err, want)
	}
	// By hand: HMAC-SHA256 keyed with the secret's decoded bytes over id.timestamp.body.
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(key, "whsec_"))
	h := hmac.New(sha256.New, raw)
	h.Write([]byte(id + "." + strconv.FormatInt(ts.Unix(), 10) + "." + string(body)))
	if byHand := "v1," + base64.StdEncoding.EncodeToString(h.Sum(nil)); byHand != want {
		t.Errorf("HMAC by hand = %q, want %q", byHand, want)
	}
}

func signedHeader(t *testing.T, id string, ts time.Time, body []byte) http.Header {
	t.Helper()
	sig, err := outbox.Sign(secret, id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", sig)
	return h
}

func TestVerify_RejectsForgeries(t *testing.T) {
	t.Parallel()
	body := []byte(`{"type":"alert.opened","timestamp":"2026-07-01T10:00:00Z","data":{"alert":7}}`)
	now := t0.Add(time.Minute)
	if ev, err := outbox.Verify(secret, signedHeader(t, "k1", t0, body), body, now, 0); err != nil || ev.Type != "alert.opened" {
		t.Fatalf("Verify(genuine) = %+v, %v", ev, err)
	}
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another secret of 32 bytes......"))
	for name, tc := range map[string]struct {
		mutate func(h http.Header) []byte
		want   error
	}{
		"tampered body": {func(http.Header) []byte { return []byte(strings.Replace(string(body), "7", "8", 1)) }, outbox.ErrWebhookSignature},
		"changed id":    {func(h http.Header) []byte { h.Set("webhook-id", "k2"); return body }, outbox.ErrWebhookSignature},
		"replayed later with a new timestamp": {func(h http.Header) []byte {
			h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
			return body
		}, outbox.ErrWebhookSignature},
		"signed with another secret": {func(h http.Header) []byte {
			sig, _ := outbox.Sign(other, "k1", t0, body)
			h.Set("webhook-signature", sig)
			return body
		}, outbox.ErrWebhookSignature},
		"v2 scheme only": {func(h http.Header) []byte {
			h.Set("webhook-signature", strings.Replace(h.Get("webhook-signature"), "v1,", "v2,", 1))
			return body
		}, outbox.ErrWebhookSignature},
		"empty signature": {func(h http.Header) []byte { h.Set("webhook-signature", "v1,"); return body }, outbox.ErrWebhookSignature},
		"truncated signature": {func(h http.Header) []byte {
			h.Set("webhook-signature", h.Get("webhook-signature")[:20])
			return body
		}, outbox.ErrWebhookSignature},
	} {
		h := signedHeader(t, "k1", t0, body)
		b := tc.mutate(h)
		if _, err := outbox.Verify(secret, h, b, now, 0); !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify = %v, want %v", name, err, tc.want)
		}
	}
	// Outside the tolerance, either way, even correctly signed.
	for _, at := range []time.Time{t0.Add(-6 * time.Minute), t0.Add(6 * time.Minute)} {
		if _, err := outbox.Verify(secret, signedHeader(t, "k1", at, body), body, t0, 0); !errors.Is(err, outbox.ErrWebhookTimestamp) {
			t.Errorf("Verify(timestamp %v from now) = %v, want ErrWebhookTimestamp", at.Sub(t0), err)
		}
	}
	// One matching v1 signature in a rotation list is enough.
	h := signedHeader(t, "k1", t0, body)
	h.Set("webhook-signature", "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc "+h.Get("webhook-signature"))
	if _, err := outbox.Verify(secret, h, body, now, 0); err != nil {
		t.Errorf("Verify(rotation list) = %v", err)
	}
	// Signed but not an event: unknown fields, trailing data, too large.
	for name, b := range map[string][]byte{
		"unknown field": []byte(`{"type":"alert.opened","timestamp":"2026-07-01T10:00:00Z","data":{},"admin":true}`),
		"trailing data": []byte(`{"type":"alert.opened","timestamp":"2026-07-01T10:00:00Z","data":{}} {}`),
		"no type":       []byte(`{"timestamp":"2026-07-01T10:00:00Z","data":{}}`),
		"too large":     []byte(`{"type":"x","timestamp":"2026-07-01T10:00:00Z","data":"` + strings.Repeat("a", outbox.MaxWebhookBodyBytes) + `"}`),
	} {
		if _, err := outbox.Verify(secret, signedHeader(t, "k1", t0, b), b, now, 0); err == nil {
			t.Errorf("%s: Verify = nil, want an error", name)
		}
	}
}

// receiver is an httptest TLS server that verifies every delivery and answers from a
// script (then 200).
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	script   []int
	attempts int
	bad      int
	ids      map[string]int
	events   []outbox.WebhookEvent
	header   http.Header
}

func newReceiver(t *testing.T, script ...int) *receiver {
	r := &receiver{script: script, ids: map[string]int{}}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, outbox.MaxWebhookBodyBytes+1))
		r.mu.Lock()
		defer r.mu.Unlock()
		r.attempts++
		ev, err := outbox.Verify(secret, req.Header, body, time.Now(), 0)
		if err != nil {
			r.bad++
			t.Errorf("receiver: Verify = %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		r.header = req.Header.Clone()
		status := http.StatusOK
		if len(r.script) > 0 {
			status, r.script = r.script[0], r.script[1:]
		}
		if status == http.StatusOK {
			r.ids[req.Header.Get("webhook-id")]++
			r.events = append(r.events, ev)
		}
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "600")
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func webhookHandler(t *testing.T, r *receiver) outbox.Handler {
	t.Helper()
	client := r.srv.Client()
	client.CheckRedirect = outbox.NewWebhookClient().CheckRedirect
	h, err := outbox.WebhookHandler(outbox.WebhookConfig{Endpoints: []outbox.Endpoint{{Name: "erp", URL: r.srv.URL + "/hooks/moat", Secret: outbox.Secret(secret)}}},
		client, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func webhookPayload(alert int) outbox.WebhookPayload {
	return outbox.WebhookPayload{Endpoint: "erp", Event: outbox.WebhookEvent{Type: "alert.opened", Timestamp: t0,
		Data: json.RawMessage(`{"alert":` + strconv.Itoa(alert) + `}`)}}
}

// A receiver that answers 500 twice then 200 sees one event per alert, with one
// webhook-id, correctly signed, however often it was delivered.
func TestWebhook_OneEventPerAlertUnderRetries(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, 500, 500)
	s := openStore(t, "")
	c := &clock{now: t0}
	w := newWorker(t, s, outbox.Handlers{outbox.KindWebhook: webhookHandler(t, r)}, c.Now, nil)
	enqueue(t, s, t0, outbox.KindWebhook, "alert-1-webhook-erp", webhookPayload(1))
	enqueue(t, s, t0, outbox.KindWebhook, "alert-2-webhook-erp", webhookPayload(2))
	for range 5 {
		if _, err := w.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.Advance(2 * time.Hour)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts != 4 || r.bad != 0 || len(r.ids) != 2 || r.ids["alert-1-webhook-erp"] != 1 || r.ids["alert-2-webhook-erp"] != 1 {
		t.Errorf("receiver: %d attempts, %d bad, ids %v; want 4 attempts, one accepted event per alert", r.attempts, r.bad, r.ids)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	for _, k := range []string{"alert-1-webhook-erp", "alert-2-webhook-erp"} {
		if row := row(t, s, k); row.State != cloudstore.OutboxDone {
			t.Errorf("%s = %+v, want done", k, row)
		}
	}
}

func TestWebhook_ClassifiesAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status    int
		permanent bool
	}{
		{400, true}, {401, true}, {404, true}, {410, true}, {422, true},
		{408, false}, {429, false}, {500, false}, {503, false}, {302, false},
	} {
		r := newReceiver(t, tc.status)
		h := webhookHandler(t, r)
		b, _ := json.Marshal(webhookPayload(1))
		_, err := h(t.Context(), outbox.Job{Kind: outbox.KindWebhook, Key: "k", Payload: b, Attempt: 1})
		if err == nil || outbox.IsPermanent(err) != tc.permanent {
			t.Errorf("answer %d: handler = %v, want permanent=%v", tc.status, err, tc.permanent)
		}
	}
}

// A receiver answering 400 ends the row dead after one attempt.
func TestWebhook_400IsDeadAfterOneAttempt(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, 400)
	s := openStore(t, "")
	c := &clock{now: t0}
	w := newWorker(t, s, outbox.Handlers{outbox.KindWebhook: webhookHandler(t, r)}, c.Now, nil)
	enqueue(t, s, t0, outbox.KindWebhook, "alert-3-webhook-erp", webhookPayload(3))
	for range 3 {
		if _, err := w.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.Advance(2 * time.Hour)
	}
	if row := row(t, s, "alert-3-webhook-erp"); row.State != cloudstore.OutboxDead || row.Attempts != 1 || !strings.Contains(row.LastError, "400") {
		t.Errorf("row = %+v, want dead after one attempt", row)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts != 1 {
		t.Errorf("receiver saw %d attempts, want 1", r.attempts)
	}
}

// A 429 with Retry-After: 600 is not tried again before ten minutes.
func TestWebhook_HonoursRetryAfter(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, 429)
	s := openStore(t, "")
	c := &clock{now: t0}
	w := newWorker(t, s, outbox.Handlers{outbox.KindWebhook: webhookHandler(t, r)}, c.Now, nil)
	enqueue(t, s, t0, outbox.KindWebhook, "k", webhookPayload(1))
	if _, err := w.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if row := row(t, s, "k"); row.Next.Before(t0.Add(10*time.Minute)) || row.Next.After(t0.Add(11*time.Minute)) {
		t.Errorf("next attempt at %v, want about ten minutes after %v (Retry-After), not the 5 s backoff", row.Next, t0)
	}
}

// Redirects are not followed: the signed event goes only where it was configured to.
func TestWebhook_RefusesRedirects(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int32
	other := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, other.URL, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = outbox.NewWebhookClient().CheckRedirect
	h, err := outbox.WebhookHandler(outbox.WebhookConfig{Endpoints: []outbox.Endpoint{{Name: "erp", URL: srv.URL, Secret: outbox.Secret(secret)}}}, client, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(webhookPayload(1))
	if _, err := h(t.Context(), outbox.Job{Kind: outbox.KindWebhook, Key: "k", Payload: b}); err == nil {
		t.Error("handler(redirect) = nil, want an error")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests, want 0", n)
	}
}

func TestWebhookConfig_Validate(t *testing.T) {
	t.Parallel()
	for name, e := range map[string]outbox.Endpoint{
		"http to a remote host": {Name: "erp", URL: "http://erp.example/hook", Secret: outbox.Secret(secret)},
		"user info in url":      {Name: "erp", URL: "https://u:p@erp.example/hook", Secret: outbox.Secret(secret)},
		"secret without prefix": {Name: "erp", URL: "https://erp.example/hook", Secret: outbox.Secret(strings.TrimPrefix(secret, "whsec_"))},
		"short secret":          {Name: "erp", URL: "https://erp.example/hook", Secret: "whsec_c2hvcnQ="},
		"bad name":              {Name: "ERP hooks", URL: "https://erp.example/hook", Secret: outbox.Secret(secret)},
	} {
		if err := (outbox.WebhookConfig{Endpoints: []outbox.Endpoint{e}}).Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", name)
		}
	}
	ok := outbox.WebhookConfig{Endpoints: []outbox.Endpoint{
		{Name: "erp", URL: "https://erp.example/hook", Secret: outbox.Secret(secret)},
		{Name: "local", URL: "http://127.0.0.1:8080/hook", Secret: outbox.Secret(secret)},
	}}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	dup := outbox.WebhookConfig{Endpoints: append(ok.Endpoints, ok.Endpoints[0])}
	if err := dup.Validate(); err == nil {
		t.Error("Validate(duplicate name) = nil, want an error")
	}
	if s := outbox.Secret(secret); s.String() != "[redacted]" || strings.Contains(s.LogValue().String(), "whsec") {
		t.Errorf("Secret prints as %q", s.String())
	}
}

// FuzzVerify: no input panics, and whatever Verify accepts was signed with the secret.
func FuzzVerify(f *testing.F) {
	body := `{"type":"alert.opened","timestamp":"2026-07-01T10:00:00Z","data":{"alert":7}}`
	ts := strconv.FormatInt(t0.Unix(), 10)
	sig, _ := outbox.Sign(secret, "k1", t0, []byte(body))
	f.Add("k1", ts, sig, []byte(body))
	f.Add("k1", ts, "v1,AAAA v1,"+sig[3:], []byte(body))
	f.Add("", "", "", []byte(""))
	f.Add("k1", "-99999999999999999999", "v1,", []byte("{}"))
	f.Fuzz(func(t *testing.T, id, tsText, sigs string, b []byte) {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", tsText)
		h.Set("webhook-signature", sigs)
		ev, err := outbox.Verify(secret, h, b, t0, 0)
		if err != nil {
			return
		}
		// Accepted: it must carry our signature over exactly these bytes, and an event.
		n, perr := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
		want, _ := outbox.Sign(secret, h.Get("webhook-id"), time.Unix(n, 0), b)
		if perr != nil || !slices.Contains(strings.Fields(h.Get("webhook-signature")), want) {
			t.Fatalf("Verify accepted %q %q %q without our signature", id, tsText, sigs)
		}
		if ev.Type == "" || len(b) > outbox.MaxWebhookBodyBytes {
			t.Fatalf("Verify accepted %+v", ev)
		}
	})
}
