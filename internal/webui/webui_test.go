package webui

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestCSRF_RefusesMissingWrongAndOtherSessionsToken(t *testing.T) {
	a, _ := NewID()
	b, _ := NewID()
	post := func(form url.Values) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if err := r.ParseForm(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := CheckCSRF(post(url.Values{CSRFField: {CSRFToken(a)}}), a); err != nil {
		t.Fatalf("own token refused: %v", err)
	}
	for name, form := range map[string]url.Values{
		"missing":         {},
		"empty":           {CSRFField: {""}},
		"other session's": {CSRFField: {CSRFToken(b)}},
		"garbage":         {CSRFField: {"x"}},
	} {
		if err := CheckCSRF(post(form), a); err == nil {
			t.Errorf("%s token accepted", name)
		}
	}
	if err := CheckCSRF(post(url.Values{CSRFField: {CSRFToken("")}}), ""); err == nil {
		t.Error("a request without a session passed the CSRF check")
	}
}

func TestCookie_IsHostOnlySecureHttpOnlyStrict(t *testing.T) {
	rec := httptest.NewRecorder()
	id, hash := NewID()
	if len(id) != IDLength || len(hash) != 64 || HashID(id) != hash {
		t.Fatalf("NewID() = %q, %q", id, hash)
	}
	SetCookie(rec, "__Host-x", id, time.Now().Add(time.Hour))
	sc := rec.Header().Get("Set-Cookie")
	for _, want := range []string{"__Host-x=" + id, "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: "__Host-x", Value: id})
	if SessionID(r, "__Host-x") != id {
		t.Error("SessionID did not return the cookie's ID")
	}
	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: "__Host-x", Value: "short"})
	if SessionID(r, "__Host-x") != "" {
		t.Error("SessionID accepted a malformed ID")
	}
}

func TestHeaders_StrictCSP(t *testing.T) {
	rec := httptest.NewRecorder()
	Headers(true, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	csp := rec.Header().Get("Content-Security-Policy")
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP %q allows %s", csp, bad)
		}
	}
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") || rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("headers = %v", rec.Header())
	}
}
