package cloudstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// DefaultPruneChunk is the rows one retention transaction deletes: short transactions, so
// the ingest's writes wait little behind a prune.
const DefaultPruneChunk = 5000

// DeleteRawBefore deletes raw readings and the record of stored stream sequences received
// before t, chunk rows per transaction (0 means DefaultPruneChunk), and returns how many
// readings it deleted. Summaries stay: that is the downsampling.
func (s *Store) DeleteRawBefore(ctx context.Context, t time.Time, chunk int) (int64, error) {
	n, err := s.deleteChunks(ctx, chunk, `DELETE FROM readings WHERE (device, time_us, seq, metric) IN
		(SELECT device, time_us, seq, metric FROM readings WHERE received_us < $1 LIMIT $2)`, us(t))
	if err != nil {
		return n, err
	}
	// A sequence is forgotten only once its rows are: a redelivery far past retention is not
	// a concern (JetStream redelivers within its AckWait).
	if _, err := s.deleteChunks(ctx, chunk, `DELETE FROM ingested WHERE seq IN
		(SELECT seq FROM ingested WHERE received_us < $1 LIMIT $2)`, us(t)); err != nil {
		return n, err
	}
	return n, nil
}

// DeleteSummariesBefore deletes cycle and hourly summaries last updated before t, events
// received before t, diagnostics finished before t and alerts cleared before t (with no
// diagnostics left that name them), chunk rows per transaction (0 means
// DefaultPruneChunk), and returns how many rows it deleted. Open alerts and unfinished
// diagnostics stay, however old.
func (s *Store) DeleteSummariesBefore(ctx context.Context, t time.Time, chunk int) (int64, error) {
	var total int64
	for _, q := range []string{
		`DELETE FROM cycle_summaries WHERE (device, cycle, phase, metric) IN
			(SELECT device, cycle, phase, metric FROM cycle_summaries WHERE updated_us < $1 LIMIT $2)`,
		`DELETE FROM hourly_summaries WHERE (device, hour_us, metric) IN
			(SELECT device, hour_us, metric FROM hourly_summaries WHERE updated_us < $1 LIMIT $2)`,
		`DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE received_us < $1 LIMIT $2)`,
		`DELETE FROM diagnostics WHERE id IN
			(SELECT id FROM diagnostics WHERE finished_us IS NOT NULL AND finished_us < $1 LIMIT $2)`,
		`DELETE FROM alerts WHERE id IN
			(SELECT a.id FROM alerts a WHERE a.state = 'cleared' AND a.cleared_us < $1
				AND NOT EXISTS (SELECT 1 FROM diagnostics d WHERE d.alert_id = a.id) LIMIT $2)`,
	} {
		n, err := s.deleteChunks(ctx, chunk, q, us(t))
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s *Store) deleteChunks(ctx context.Context, chunk int, q string, before int64) (int64, error) {
	if chunk == 0 {
		chunk = DefaultPruneChunk
	}
	if chunk < 0 {
		return 0, fmt.Errorf("%w: chunk must be positive", ErrInvalid)
	}
	var total int64
	for {
		var n int64
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, q, before, chunk)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(chunk) {
			return total, nil
		}
	}
}
