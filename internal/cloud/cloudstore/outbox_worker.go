package cloudstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// The outbox worker's side of the outbox (internal/cloud/outbox): rows are claimed under a
// lease, and an attempt's outcome is recorded only while the row is still that attempt's.
// The attempt number is the fencing token: a worker that stalled past its lease, whose row
// another worker claimed (attempts+1), cannot overwrite the newer attempt's outcome
// (attacked by testOutboxLeaseTakeover). On PostgreSQL, ClaimOutbox locks the rows it
// takes with FOR UPDATE SKIP LOCKED, so several cloud replicas claim disjoint rows without
// waiting for each other; SQLite has one writer, which serializes claims by itself.

// MaxOutboxTextBytes bounds the stored result and last error of a row.
const MaxOutboxTextBytes = 1000

// OutboxRow is a stored outbox row.
type OutboxRow struct {
	ID      int64
	Kind    string
	Key     string
	Device  string
	AlertID int64
	Payload json.RawMessage
	State   string
	// Attempts counts the claims; the latest claim is attempt Attempts.
	Attempts   int
	Next       time.Time
	LeaseUntil time.Time
	LastError  string
	Result     string
	CreatedAt  time.Time
	DoneAt     time.Time // zero while pending
}

const outboxColumns = `id, kind, key, device, alert_id, payload, state, attempts, next_us, lease_until_us,
	last_error, result, created_us, done_us`

func scanOutbox(sc interface{ Scan(...any) error }) (OutboxRow, error) {
	var (
		r                    OutboxRow
		alert                sql.NullInt64
		payload              string
		next, lease, created int64
		done                 sql.NullInt64
	)
	if err := sc.Scan(&r.ID, &r.Kind, &r.Key, &r.Device, &alert, &payload, &r.State, &r.Attempts, &next, &lease,
		&r.LastError, &r.Result, &created, &done); err != nil {
		return OutboxRow{}, err
	}
	r.AlertID = alert.Int64
	r.Payload = json.RawMessage(payload)
	r.Next, r.LeaseUntil, r.CreatedAt, r.DoneAt = fromUS(next), fromUS(lease), fromUS(created), fromNullUS(done)
	return r, nil
}

// MaxOutboxClaim bounds the rows one ClaimOutbox takes.
const MaxOutboxClaim = 1000

// ClaimOutbox leases up to limit due rows (pending, next <= now, no live lease) until
// now+lease, counts the attempt, and returns them, the longest due first.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]OutboxRow, error) {
	if limit < 1 || limit > MaxOutboxClaim {
		return nil, fmt.Errorf("%w: limit must be 1 to %d, not %d", ErrInvalid, MaxOutboxClaim, limit)
	}
	if lease <= 0 {
		return nil, fmt.Errorf("%w: lease must be positive", ErrInvalid)
	}
	lock := ""
	if s.d.name == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	q := `UPDATE outbox SET attempts = attempts + 1, lease_until_us = $1
		WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_us <= $2 AND lease_until_us <= $2
			ORDER BY next_us, id LIMIT $3` + lock + `)
		RETURNING ` + outboxColumns
	var out []OutboxRow
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, q, us(now.Add(lease)), us(now), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanOutbox(rows)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim outbox: %w", err)
	}
	// RETURNING's order is unspecified.
	slices.SortFunc(out, func(a, b OutboxRow) int {
		if c := a.Next.Compare(b.Next); c != 0 {
			return c
		}
		return int(min(max(a.ID-b.ID, -1), 1))
	})
	return out, nil
}

// CompleteOutbox records attempt of row id as done with result. ErrConflict: the row is no
// longer pending under that attempt (another worker claimed it, or it finished).
func (s *Store) CompleteOutbox(ctx context.Context, id int64, attempt int, result string, now time.Time) error {
	return s.finishOutbox(ctx, id, attempt, `UPDATE outbox SET state = 'done', result = $3, done_us = $4, lease_until_us = 0
		WHERE id = $1 AND attempts = $2 AND state = 'pending'`, clip(result), us(now))
}

// RetryOutbox records attempt of row id as failed with errText, to be tried again at
// next. ErrConflict as CompleteOutbox.
func (s *Store) RetryOutbox(ctx context.Context, id int64, attempt int, errText string, next time.Time) error {
	return s.finishOutbox(ctx, id, attempt, `UPDATE outbox SET last_error = $3, next_us = $4, lease_until_us = 0
		WHERE id = $1 AND attempts = $2 AND state = 'pending'`, clip(errText), us(next))
}

// KillOutbox records attempt of row id as failed for good (dead) with errText.
// ErrConflict as CompleteOutbox.
func (s *Store) KillOutbox(ctx context.Context, id int64, attempt int, errText string, now time.Time) error {
	return s.finishOutbox(ctx, id, attempt, `UPDATE outbox SET state = 'dead', last_error = $3, done_us = $4, lease_until_us = 0
		WHERE id = $1 AND attempts = $2 AND state = 'pending'`, clip(errText), us(now))
}

func (s *Store) finishOutbox(ctx context.Context, id int64, attempt int, q string, text string, at int64) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q, id, attempt, text, at)
		if err != nil {
			return fmt.Errorf("record outbox row %d attempt %d: %w", id, attempt, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("outbox row %d attempt %d: no longer leased by this attempt: %w", id, attempt, ErrConflict)
		}
		return nil
	})
}

// clip makes s storable: valid UTF-8 (PostgreSQL refuses anything else), no NUL, at most
// MaxOutboxTextBytes. Handlers' errors quote what remote servers said.
func clip(s string) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	if len(s) <= MaxOutboxTextBytes {
		return s
	}
	s = s[:MaxOutboxTextBytes]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// OutboxFilter selects rows for ListOutbox; empty fields match all.
type OutboxFilter struct {
	Device  string
	AlertID int64
	State   string
	// BeforeID, when not 0, returns only rows with a smaller ID (the previous page's last):
	// pages run newest first.
	BeforeID int64
	// Limit is 1 to 1000; 0 means 100.
	Limit int
}

// ListOutbox returns rows newest first.
func (s *Store) ListOutbox(ctx context.Context, f OutboxFilter) ([]OutboxRow, error) {
	var w where
	w.add("device = $%d", f.Device, f.Device != "")
	w.add("alert_id = $%d", f.AlertID, f.AlertID != 0)
	w.add("state = $%d", f.State, f.State != "")
	w.add("id < $%d", f.BeforeID, f.BeforeID != 0)
	return listRows(ctx, s, `SELECT `+outboxColumns+` FROM outbox`, w, "id DESC", f.Limit, scanOutbox)
}

// OutboxBacklog describes the pending rows.
type OutboxBacklog struct {
	Pending int64
	// Oldest is when the oldest pending row was enqueued; zero when none is pending.
	Oldest time.Time
}

// OutboxBacklog counts the pending rows (for the worker's gauges).
func (s *Store) OutboxBacklog(ctx context.Context) (OutboxBacklog, error) {
	var (
		b      OutboxBacklog
		oldest sql.NullInt64
	)
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT count(*), MIN(created_us) FROM outbox WHERE state = 'pending'`).Scan(&b.Pending, &oldest)
	})
	b.Oldest = fromNullUS(oldest)
	return b, err
}

// PruneOutbox deletes done and dead rows finished before doneBefore, chunk rows per
// transaction (0 means DefaultPruneChunk), and returns how many it deleted. Pending rows
// stay, however old.
func (s *Store) PruneOutbox(ctx context.Context, doneBefore time.Time, chunk int) (int64, error) {
	return s.deleteChunks(ctx, chunk, `DELETE FROM outbox WHERE id IN
		(SELECT id FROM outbox WHERE state IN ('done', 'dead') AND done_us < $1 LIMIT $2)`, us(doneBefore))
}
