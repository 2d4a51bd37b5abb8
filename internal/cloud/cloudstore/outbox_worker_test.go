package cloudstore_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/testenv"
)

func TestSQLite_Outbox(t *testing.T) {
	t.Parallel()
	runOutboxSuite(t, openSQLite)
}

func TestPostgres_Outbox(t *testing.T) {
	t.Parallel()
	testenv.PostgresDSN(t)
	runOutboxSuite(t, openPostgres)
}

func runOutboxSuite(t *testing.T, open func(*testing.T) *cloudstore.Store) {
	tests := map[string]func(*testing.T, *cloudstore.Store){
		"ClaimRetryComplete":           testOutboxClaimRetryComplete,
		"LeaseTakeoverCannotOverwrite": testOutboxLeaseTakeover,
		"ConcurrentClaimsAreDisjoint":  testOutboxConcurrentClaims,
		"ListAndPrune":                 testOutboxListAndPrune,
		"StoresAnyErrorText":           testOutboxStoresAnyErrorText,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, open(t))
		})
	}
}

func outboxItem(key string) cloudstore.OutboxItem {
	return cloudstore.OutboxItem{Kind: "email", Key: key, Payload: json.RawMessage(`{"to":"a@example.com"}`)}
}

func claimIDs(t *testing.T, s *cloudstore.Store, now time.Time, lease time.Duration, limit int) []cloudstore.OutboxRow {
	t.Helper()
	rows, err := s.ClaimOutbox(t.Context(), now, lease, limit)
	if err != nil {
		t.Fatalf("ClaimOutbox(%v) = %v", now, err)
	}
	return rows
}

func testOutboxClaimRetryComplete(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	later := outboxItem("k3")
	later.NotBefore = t0.Add(time.Hour)
	if err := s.EnqueueOutbox(ctx, t0, outboxItem("k1"), outboxItem("k2"), later); err != nil {
		t.Fatal(err)
	}
	rows := claimIDs(t, s, t0, time.Minute, 10)
	if len(rows) != 2 || rows[0].Key != "k1" || rows[1].Key != "k2" || rows[0].Attempts != 1 ||
		string(rows[0].Payload) != `{"to":"a@example.com"}` || !rows[0].LeaseUntil.Equal(t0.Add(time.Minute)) {
		t.Fatalf("ClaimOutbox = %+v, want k1 and k2 at attempt 1", rows)
	}
	// Leased rows are not claimed again while the lease lasts.
	if again := claimIDs(t, s, t0.Add(30*time.Second), time.Minute, 10); len(again) != 0 {
		t.Errorf("ClaimOutbox(during lease) = %d rows, want 0", len(again))
	}
	if err := s.CompleteOutbox(ctx, rows[0].ID, 1, "sent", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.RetryOutbox(ctx, rows[1].ID, 1, "451 try later", t0.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := claimIDs(t, s, t0.Add(5*time.Second), time.Minute, 10); len(got) != 0 {
		t.Errorf("ClaimOutbox(before next) = %d rows, want 0", len(got))
	}
	got := claimIDs(t, s, t0.Add(10*time.Second), time.Minute, 10)
	if len(got) != 1 || got[0].Key != "k2" || got[0].Attempts != 2 || got[0].LastError != "451 try later" {
		t.Fatalf("ClaimOutbox(after next) = %+v, want k2 at attempt 2", got)
	}
	if err := s.KillOutbox(ctx, got[0].ID, 2, "550 no such user", t0.Add(11*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Done and dead rows are never claimed; the delayed one comes due.
	got = claimIDs(t, s, t0.Add(2*time.Hour), time.Minute, 10)
	if len(got) != 1 || got[0].Key != "k3" {
		t.Errorf("ClaimOutbox(later) = %+v, want only k3", got)
	}
	b, err := s.OutboxBacklog(ctx)
	if err != nil || b.Pending != 1 || !b.Oldest.Equal(t0) {
		t.Errorf("OutboxBacklog = %+v, %v, want 1 pending since %v", b, err, t0)
	}
	list, err := s.ListOutbox(ctx, cloudstore.OutboxFilter{})
	if err != nil || len(list) != 3 {
		t.Fatalf("ListOutbox = %d rows, %v", len(list), err)
	}
	byKey := map[string]cloudstore.OutboxRow{}
	for _, r := range list {
		byKey[r.Key] = r
	}
	if r := byKey["k1"]; r.State != cloudstore.OutboxDone || r.Result != "sent" || !r.DoneAt.Equal(t0.Add(time.Second)) {
		t.Errorf("k1 = %+v, want done with result sent", r)
	}
	if r := byKey["k2"]; r.State != cloudstore.OutboxDead || r.LastError != "550 no such user" || r.Attempts != 2 {
		t.Errorf("k2 = %+v, want dead after 2 attempts", r)
	}
	if _, err := s.ClaimOutbox(ctx, t0, time.Minute, 0); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("ClaimOutbox(limit 0) = %v, want ErrInvalid", err)
	}
}

// A worker whose lease expired while it was still working (a GC pause, a slow SMTP
// server) must not overwrite the outcome of the worker that took the row over.
func testOutboxLeaseTakeover(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	if err := s.EnqueueOutbox(ctx, t0, outboxItem("takeover")); err != nil {
		t.Fatal(err)
	}
	first := claimIDs(t, s, t0, time.Minute, 1)
	second := claimIDs(t, s, t0.Add(2*time.Minute), time.Minute, 1)
	if len(first) != 1 || len(second) != 1 || second[0].Attempts != 2 {
		t.Fatalf("claims = %+v, %+v, want the row taken over at attempt 2", first, second)
	}
	id := first[0].ID
	if err := s.CompleteOutbox(ctx, id, 1, "stale", t0.Add(3*time.Minute)); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("CompleteOutbox(stale attempt) = %v, want ErrConflict", err)
	}
	if err := s.RetryOutbox(ctx, id, 1, "stale", t0.Add(time.Hour)); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("RetryOutbox(stale attempt) = %v, want ErrConflict", err)
	}
	if err := s.KillOutbox(ctx, id, 1, "stale", t0.Add(3*time.Minute)); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("KillOutbox(stale attempt) = %v, want ErrConflict", err)
	}
	if err := s.CompleteOutbox(ctx, id, 2, "sent", t0.Add(3*time.Minute)); err != nil {
		t.Fatalf("CompleteOutbox(current attempt) = %v", err)
	}
	// Nor can anything be recorded twice.
	if err := s.KillOutbox(ctx, id, 2, "late", t0.Add(4*time.Minute)); !errors.Is(err, cloudstore.ErrConflict) {
		t.Errorf("KillOutbox(after done) = %v, want ErrConflict", err)
	}
	list, err := s.ListOutbox(ctx, cloudstore.OutboxFilter{})
	if err != nil || len(list) != 1 || list[0].State != cloudstore.OutboxDone || list[0].Result != "sent" || list[0].LastError != "" {
		t.Errorf("ListOutbox = %+v, %v, want the second attempt's outcome", list, err)
	}
}

// Several workers (cloud replicas) claiming at once take every row exactly once.
func testOutboxConcurrentClaims(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	const n = 200
	var items []cloudstore.OutboxItem
	for i := range n {
		items = append(items, outboxItem(fmt.Sprintf("c%03d", i)))
	}
	if err := s.EnqueueOutbox(ctx, t0, items...); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		claimed = map[int64]int{}
		wg      sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				rows, err := s.ClaimOutbox(ctx, t0, time.Hour, 10)
				if err != nil {
					t.Errorf("ClaimOutbox = %v", err)
					return
				}
				if len(rows) == 0 {
					return
				}
				mu.Lock()
				for _, r := range rows {
					claimed[r.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimed) != n {
		t.Errorf("claimed %d distinct rows, want %d", len(claimed), n)
	}
	for id, c := range claimed {
		if c != 1 {
			t.Errorf("row %d claimed %d times, want once", id, c)
		}
	}
}

func testOutboxListAndPrune(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	a, err := s.OpenAlert(ctx, cloudstore.NewAlert{Product: "dw100", Device: devA, Rule: "r", Severity: "warning", OpenedAt: t0,
		Message: "m", Evidence: json.RawMessage(`[]`), Outbox: []cloudstore.OutboxItem{
			{Kind: "notify", Key: "alert-notify", Device: devA, Payload: json.RawMessage(`{}`)},
			{Kind: "webhook", Key: "alert-webhook", Device: devA, Payload: json.RawMessage(`{}`)},
		}})
	if err != nil {
		t.Fatal(err)
	}
	other := outboxItem("other")
	other.Device = devB
	if err := s.EnqueueOutbox(ctx, t0, other); err != nil {
		t.Fatal(err)
	}
	byAlert, err := s.ListOutbox(ctx, cloudstore.OutboxFilter{AlertID: a.ID})
	if err != nil || len(byAlert) != 2 || byAlert[0].Key != "alert-webhook" || byAlert[0].AlertID != a.ID {
		t.Errorf("ListOutbox(alert) = %+v, %v, want its two rows newest first", byAlert, err)
	}
	page, err := s.ListOutbox(ctx, cloudstore.OutboxFilter{Device: devA, Limit: 1})
	if err != nil || len(page) != 1 {
		t.Fatalf("ListOutbox(device, limit 1) = %+v, %v", page, err)
	}
	page2, err := s.ListOutbox(ctx, cloudstore.OutboxFilter{Device: devA, BeforeID: page[0].ID})
	if err != nil || len(page2) != 1 || page2[0].Key != "alert-notify" {
		t.Errorf("ListOutbox(next page) = %+v, %v", page2, err)
	}
	if _, err := s.ListOutbox(ctx, cloudstore.OutboxFilter{Limit: 1001}); !errors.Is(err, cloudstore.ErrInvalid) {
		t.Errorf("ListOutbox(limit 1001) = %v, want ErrInvalid", err)
	}
	rows := claimIDs(t, s, t0, time.Minute, 10)
	for _, r := range rows {
		switch r.Key {
		case "alert-notify":
			err = s.CompleteOutbox(ctx, r.ID, 1, "sent", t0.Add(time.Minute))
		case "alert-webhook":
			err = s.KillOutbox(ctx, r.ID, 1, "410 gone", t0.Add(2*time.Hour))
		default:
			err = s.RetryOutbox(ctx, r.ID, 1, "later", t0.Add(time.Hour))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneOutbox(ctx, t0.Add(time.Hour), 1)
	if err != nil || n != 1 {
		t.Errorf("PruneOutbox(1h) = %d, %v, want the done row only", n, err)
	}
	n, err = s.PruneOutbox(ctx, t0.Add(48*time.Hour), 0)
	if err != nil || n != 1 {
		t.Errorf("PruneOutbox(48h) = %d, %v, want the dead row; the pending row stays", n, err)
	}
	left, err := s.ListOutbox(ctx, cloudstore.OutboxFilter{})
	if err != nil || len(left) != 1 || left[0].State != cloudstore.OutboxPending {
		t.Errorf("ListOutbox after prune = %+v, %v, want the pending row", left, err)
	}
	dead, err := s.ListOutbox(ctx, cloudstore.OutboxFilter{State: cloudstore.OutboxDead})
	if err != nil || len(dead) != 0 {
		t.Errorf("ListOutbox(dead) = %+v, %v", dead, err)
	}
}

// Errors quote remote servers: invalid UTF-8, NUL bytes and megabytes must still be
// recordable, or the row would be retried for ever.
func testOutboxStoresAnyErrorText(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	if err := s.EnqueueOutbox(ctx, t0, outboxItem("ugly")); err != nil {
		t.Fatal(err)
	}
	rows := claimIDs(t, s, t0, time.Minute, 1)
	ugly := "bad \xff\xfe\x00 byte " + strings.Repeat("é", 1<<20)
	if err := s.RetryOutbox(ctx, rows[0].ID, 1, ugly, t0); err != nil {
		t.Fatalf("RetryOutbox(ugly text) = %v", err)
	}
	list, err := s.ListOutbox(ctx, cloudstore.OutboxFilter{})
	if err != nil || len(list) != 1 {
		t.Fatal(err)
	}
	got := list[0].LastError
	if len(got) > cloudstore.MaxOutboxTextBytes || !utf8.ValidString(got) || strings.Contains(got, "\x00") || !strings.HasPrefix(got, "bad ") {
		t.Errorf("LastError = %q (%d bytes), want valid UTF-8 without NUL of at most %d bytes", got[:min(40, len(got))], len(got), cloudstore.MaxOutboxTextBytes)
	}
}
