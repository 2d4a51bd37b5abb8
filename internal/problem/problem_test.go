package problem_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/problem"
)

func TestWrite_HidesInternalCause(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/x", nil)
	problem.Write(rec, req, errors.New("pq: password authentication failed for user moat"))
	if rec.Code != http.StatusInternalServerError || rec.Header().Get("Content-Type") != problem.ContentType {
		t.Fatalf("Write(internal) = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if strings.Contains(rec.Body.String(), "password") {
		t.Errorf("internal cause leaked into the response: %s", rec.Body)
	}
	var b problem.Body
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || b.Status != 500 || b.Code != "internal" || b.Instance != "/api/v1/x" {
		t.Errorf("body = %+v, %v", b, err)
	}
}

func TestKinds_MapToDistinctStatusAndExit(t *testing.T) {
	t.Parallel()
	for k, want := range map[problem.Kind]int{
		problem.Invalid: 400, problem.Unauthenticated: 401, problem.Forbidden: 403, problem.NotFound: 404,
		problem.Conflict: 409, problem.PreconditionFailed: 412, problem.TooLarge: 413, problem.PreconditionRequired: 428,
		problem.Unavailable: 503, problem.Internal: 500,
	} {
		if k.Status() != want {
			t.Errorf("%v.Status() = %d, want %d", k, k.Status(), want)
		}
		if problem.KindForStatus(want) != k {
			t.Errorf("KindForStatus(%d) = %v, want %v", want, problem.KindForStatus(want), k)
		}
		if k.ExitCode() < 3 {
			t.Errorf("%v.ExitCode() = %d, want >= 3 (0-2 are ok, error, usage)", k, k.ExitCode())
		}
	}
}

func TestValidation_ReportsEveryField(t *testing.T) {
	t.Parallel()
	var v problem.Validation
	if v.Err() != nil {
		t.Fatal("empty Validation has an error")
	}
	v.Add("name", "name_required", "name must not be empty")
	v.Add("os_feed", "invalid_os_feed", "bad feed")
	p := problem.From(v.Err())
	if p.Kind != problem.Invalid || p.Field != "name" || len(p.Fields) != 2 {
		t.Errorf("Validation.Err() = %+v, want Invalid naming name with 2 fields", p)
	}
}

// TestWrite_RetryAfter: an Unavailable problem that says when to come back carries it as
// Retry-After in whole seconds, rounded up; one that does not sends no such header.
func TestWrite_RetryAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		after time.Duration
		want  string
	}{{0, ""}, {1500 * time.Millisecond, "2"}, {30 * time.Second, "30"}} {
		rec := httptest.NewRecorder()
		problem.Write(rec, httptest.NewRequest("POST", "/api/v1/device/updates", nil),
			&problem.Error{Kind: problem.Unavailable, Code: "busy", RetryAfter: tc.after})
		if got := rec.Header().Get("Retry-After"); rec.Code != http.StatusServiceUnavailable || got != tc.want {
			t.Errorf("Write(RetryAfter %s) = %d, Retry-After %q; want 503, %q", tc.after, rec.Code, got, tc.want)
		}
	}
}
