package cloudstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Reading is one stored raw reading.
type Reading struct {
	Device     string
	Product    string
	Time       time.Time // the device's clock
	ReceivedAt time.Time
	Seq        uint64
	Cycle      string
	Phase      string
	Metric     string
	Value      float64
	Unit       string
}

// Cursor is where a page of readings ends; pass it as the next query's After.
type Cursor struct {
	Time   time.Time
	Seq    uint64
	Metric string
}

// TelemetryQuery selects a device's raw readings.
type TelemetryQuery struct {
	Device string
	// Since (inclusive) and Until (exclusive, zero for no bound) bound the device's time.
	Since, Until time.Time
	// Metrics, when not empty, keeps only these metrics (at most telemetry.MaxReadings).
	Metrics []string
	// After continues from a previous page's Next.
	After *Cursor
	// Limit is 1 to 1000; 0 means 100.
	Limit int
}

// TelemetryPage is a page of readings, oldest first.
type TelemetryPage struct {
	Readings []Reading
	// Next is the cursor of the next page; nil when this page is the last.
	Next *Cursor
}

// Telemetry returns q's page of readings, ordered by device time, then stream sequence,
// then metric (keyset paging on the primary key).
func (s *Store) Telemetry(ctx context.Context, q TelemetryQuery) (TelemetryPage, error) {
	limit, err := pageLimit(q.Limit)
	if err != nil {
		return TelemetryPage{}, err
	}
	if len(q.Metrics) > telemetry.MaxReadings {
		return TelemetryPage{}, fmt.Errorf("%w: at most %d metrics, not %d", ErrInvalid, telemetry.MaxReadings, len(q.Metrics))
	}
	until := int64(1<<63 - 1)
	if !q.Until.IsZero() {
		until = us(q.Until)
	}
	args := []any{q.Device, us(q.Since), until}
	sqlq := `SELECT device, product, time_us, received_us, seq, cycle, phase, metric, value, unit FROM readings
		WHERE device = $1 AND time_us >= $2 AND time_us < $3`
	if q.After != nil {
		args = append(args, us(q.After.Time), seqArg(q.After.Seq), q.After.Metric)
		sqlq += ` AND (time_us, seq, metric) > ($4, $5, $6)`
	}
	if len(q.Metrics) > 0 {
		sqlq += ` AND metric IN (` + placeholders(len(args)+1, len(q.Metrics)) + `)`
		for _, m := range q.Metrics {
			args = append(args, m)
		}
	}
	args = append(args, limit+1)
	sqlq += fmt.Sprintf(` ORDER BY time_us, seq, metric LIMIT $%d`, len(args)) //nolint:gosec // G202: only constant SQL and $n placeholders are joined; every value is bound
	var page TelemetryPage
	err = s.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, sqlq, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r Reading
			var at, received, seq int64
			if err := rows.Scan(&r.Device, &r.Product, &at, &received, &seq, &r.Cycle, &r.Phase, &r.Metric, &r.Value, &r.Unit); err != nil {
				return err
			}
			r.Time, r.ReceivedAt, r.Seq = fromUS(at), fromUS(received), seqOf(seq)
			page.Readings = append(page.Readings, r)
		}
		return rows.Err()
	})
	if err != nil {
		return TelemetryPage{}, err
	}
	if len(page.Readings) > limit {
		page.Readings = page.Readings[:limit]
		last := page.Readings[limit-1]
		page.Next = &Cursor{Time: last.Time, Seq: last.Seq, Metric: last.Metric}
	}
	return page, nil
}

// Summary aggregates a metric's readings over one cycle phase or one hour.
type Summary struct {
	Device  string
	Product string
	Metric  string
	Unit    string
	// Cycle and Phase name a cycle summary; Hour starts an hourly one (device clock).
	Cycle string
	Phase string
	Hour  time.Time
	// First and Last are the first and last reading's time (cycle summaries only).
	First, Last   time.Time
	Min, Max, Sum float64
	Count         int64
}

// Avg is the mean of the summarized readings.
func (s Summary) Avg() float64 {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / float64(s.Count)
}

// CycleSummaries returns device's per-cycle-phase summaries whose last reading is at or
// after since, oldest first (at most limit: 1 to 1000, 0 means 100).
func (s *Store) CycleSummaries(ctx context.Context, device string, since time.Time, limit int) ([]Summary, error) {
	return s.cycleSummaries(ctx, `device = $1 AND last_us >= $2`, []any{device, us(since)}, limit)
}

// FleetCycleSummaries returns the per-cycle summaries of metric at phase of every device
// of product whose last reading is at or after since (at most limit: 1 to 1000, 0 means
// 100), for fleet-relative rules.
func (s *Store) FleetCycleSummaries(ctx context.Context, product, metric, phase string, since time.Time, limit int) ([]Summary, error) {
	return s.cycleSummaries(ctx, `product = $1 AND metric = $2 AND phase = $3 AND last_us >= $4`,
		[]any{product, metric, phase, us(since)}, limit)
}

func (s *Store) cycleSummaries(ctx context.Context, where string, args []any, limit int) ([]Summary, error) {
	limit, err := pageLimit(limit)
	if err != nil {
		return nil, err
	}
	args = append(args, limit)
	q := fmt.Sprintf( //nolint:gosec // G201/G202: only constant SQL and $n placeholders are formatted in; every value is bound
		`SELECT device, product, metric, unit, cycle, phase, first_us, last_us, min_value, max_value, sum_value, samples
		FROM cycle_summaries WHERE %s ORDER BY last_us, device, cycle, phase, metric LIMIT $%d`, where, len(args))
	var out []Summary
	err = s.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m Summary
			var first, last int64
			if err := rows.Scan(&m.Device, &m.Product, &m.Metric, &m.Unit, &m.Cycle, &m.Phase, &first, &last, &m.Min, &m.Max, &m.Sum, &m.Count); err != nil {
				return err
			}
			m.First, m.Last = fromUS(first), fromUS(last)
			out = append(out, m)
		}
		return rows.Err()
	})
	return out, err
}

// HourlySummaries returns device's hourly summaries from the hour of since on, oldest
// first (at most limit: 1 to 1000, 0 means 100).
func (s *Store) HourlySummaries(ctx context.Context, device string, since time.Time, limit int) ([]Summary, error) {
	limit, err := pageLimit(limit)
	if err != nil {
		return nil, err
	}
	var out []Summary
	err = s.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT device, product, metric, unit, hour_us, min_value, max_value, sum_value, samples
			FROM hourly_summaries WHERE device = $1 AND hour_us >= $2 ORDER BY hour_us, metric LIMIT $3`,
			device, us(since.Truncate(time.Hour)), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m Summary
			var hour int64
			if err := rows.Scan(&m.Device, &m.Product, &m.Metric, &m.Unit, &hour, &m.Min, &m.Max, &m.Sum, &m.Count); err != nil {
				return err
			}
			m.Hour = fromUS(hour)
			out = append(out, m)
		}
		return rows.Err()
	})
	return out, err
}

// StoredEvent is one stored device event.
type StoredEvent struct {
	Seq        uint64
	Device     string
	Product    string
	Time       time.Time
	ReceivedAt time.Time
	Name       string
	Cycle      string
	Readings   map[string]telemetry.Reading
	Message    string
}

// Events returns device's events with device time in [since, until) (zero until: no
// bound), ordered by time, then stream sequence; after, when not nil, continues past that
// event (its Time and Seq: pass a page's last event). limit is 1 to 1000, 0 means 100.
func (s *Store) Events(ctx context.Context, device string, since, until time.Time, after *StoredEvent, limit int) ([]StoredEvent, error) {
	limit, err := pageLimit(limit)
	if err != nil {
		return nil, err
	}
	end := int64(1<<63 - 1)
	if !until.IsZero() {
		end = us(until)
	}
	args := []any{device, us(since), end}
	q := `SELECT seq, device, product, time_us, received_us, name, cycle, readings, message FROM events
		WHERE device = $1 AND time_us >= $2 AND time_us < $3`
	if after != nil {
		args = append(args, us(after.Time), seqArg(after.Seq))
		q += ` AND (time_us, seq) > ($4, $5)`
	}
	args = append(args, limit)
	q += fmt.Sprintf(` ORDER BY time_us, seq LIMIT $%d`, len(args)) //nolint:gosec // G202: only constant SQL and $n placeholders are joined; every value is bound
	var out []StoredEvent
	err = s.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e StoredEvent
			var seq, at, received int64
			var readings string
			if err := rows.Scan(&seq, &e.Device, &e.Product, &at, &received, &e.Name, &e.Cycle, &readings, &e.Message); err != nil {
				return err
			}
			e.Seq, e.Time, e.ReceivedAt = seqOf(seq), fromUS(at), fromUS(received)
			if err := json.Unmarshal([]byte(readings), &e.Readings); err != nil {
				return fmt.Errorf("event %d readings: %w", seq, err)
			}
			if len(e.Readings) == 0 {
				e.Readings = nil
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}
