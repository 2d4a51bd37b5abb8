package cloudstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A batch is written in a few multi-row statements rather than several statements per
// message: one INSERT per chunk for the ingested keys, the readings and the events, and one
// upsert per chunk for each summary table with the batch's deltas aggregated in Go first.
// On PostgreSQL every statement is a network round trip, on SQLite a prepare and a VM run,
// so the statement count, not the row count, dominated the cost (docs/cloud-performance.md).

// Parameter limits of one statement: SQLite's SQLITE_MAX_VARIABLE_NUMBER (32766 since
// 3.32) and PostgreSQL's wire protocol (a 16-bit parameter count, 65535).
const (
	sqliteMaxParams   = 32766
	postgresMaxParams = 65535
)

// maxRowsPerStatement caps a chunk below the parameter limit as well: a longer VALUES list
// costs more to parse and plan than the round trips it saves.
const maxRowsPerStatement = 1000

// rowsPerStatement is how many rows of cols values one statement of dialect d carries.
func (d dialect) rowsPerStatement(cols int) int {
	limit := sqliteMaxParams
	if d.name == Postgres {
		limit = postgresMaxParams
	}
	return max(1, min(maxRowsPerStatement, limit/cols))
}

// writeBatch is WriteBatch's transaction body; records are valid.
func (s *Store) writeBatch(ctx context.Context, tx *sql.Tx, records []Record) (BatchResult, error) {
	var res BatchResult
	fresh, err := s.insertIngested(ctx, tx, records)
	if err != nil {
		return res, fmt.Errorf("insert ingested keys: %w", err)
	}
	var (
		readings, events []any
		replies          []int
		cycles           = map[cycleKey]*agg{}
		hours            = map[hourKey]*agg{}
	)
	for i, r := range records {
		// fresh holds each newly stored sequence once: a sequence stored before, or a
		// second copy of one within this batch, is a duplicate.
		if !fresh[r.Seq] {
			res.Duplicates++
			continue
		}
		delete(fresh, r.Seq)
		res.Stored = append(res.Stored, i)
		received := us(r.ReceivedAt)
		switch {
		case r.Telemetry != nil:
			readings = appendReadings(readings, r, received, cycles, hours)
		case r.Event != nil:
			e := r.Event
			payload := []byte("{}")
			if len(e.Readings) > 0 {
				if payload, err = json.Marshal(e.Readings); err != nil {
					return res, fmt.Errorf("store seq %d: %w", r.Seq, err)
				}
			}
			events = append(events, seqArg(r.Seq), r.Device, us(e.Time), received, r.Product, e.Name, e.Cycle, string(payload), e.Message)
		default:
			replies = append(replies, i)
		}
	}
	if err := s.insertRows(ctx, tx, `INSERT INTO readings (device, time_us, seq, metric, product, received_us, cycle, phase, value, unit) VALUES `,
		"", 10, readings, nil); err != nil {
		return res, fmt.Errorf("insert readings: %w", err)
	}
	if err := s.insertRows(ctx, tx, `INSERT INTO events (seq, device, time_us, received_us, product, name, cycle, readings, message) VALUES `,
		"", 9, events, nil); err != nil {
		return res, fmt.Errorf("insert events: %w", err)
	}
	// Replies one at a time and in stream order: each finishes at most one diagnostic,
	// and a second reply to the same request finds it finished.
	for _, i := range replies {
		r := records[i]
		matched, err := s.finishFromReply(ctx, tx, r.Device, *r.Reply, r.ReceivedAt)
		if err != nil {
			return res, fmt.Errorf("store seq %d: %w", r.Seq, err)
		}
		if !matched {
			res.UnmatchedReplies++
		}
	}
	return res, s.upsertSummaries(ctx, tx, cycles, hours)
}

// insertIngested records the batch's sequences and returns those stored now. They are
// inserted in ascending order, so two PostgreSQL replicas racing on a redelivered message
// wait on each other's keys in the same order rather than deadlocking.
func (s *Store) insertIngested(ctx context.Context, tx *sql.Tx, records []Record) (map[uint64]bool, error) {
	type key struct {
		seq      uint64
		received int64
	}
	keys := make([]key, 0, len(records))
	seen := make(map[uint64]bool, len(records))
	for _, r := range records {
		if !seen[r.Seq] {
			seen[r.Seq] = true
			keys = append(keys, key{r.Seq, us(r.ReceivedAt)})
		}
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Compare(a.seq, b.seq) })
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, seqArg(k.seq), k.received)
	}
	fresh := make(map[uint64]bool, len(keys))
	err := s.insertRows(ctx, tx, `INSERT INTO ingested (seq, received_us) VALUES `, ` ON CONFLICT (seq) DO NOTHING RETURNING seq`, 2, args,
		func(rows *sql.Rows) error {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				return err
			}
			fresh[seqOf(seq)] = true
			return nil
		})
	return fresh, err
}

// appendReadings appends r's reading rows to rows and adds them to the batch's summaries.
func appendReadings(rows []any, r Record, received int64, cycles map[cycleKey]*agg, hours map[hourKey]*agg) []any {
	t := r.Telemetry
	at := us(t.Time)
	hour := us(t.Time.Truncate(time.Hour))
	for _, metric := range sortedKeys(t.Readings) {
		rd := t.Readings[metric]
		rows = append(rows, r.Device, at, seqArg(r.Seq), metric, r.Product, received, t.Cycle, t.Phase, rd.Value, rd.Unit)
		if t.Cycle != "" {
			k := cycleKey{r.Device, t.Cycle, t.Phase, metric}
			a := cycles[k]
			if a == nil {
				a = &agg{}
				cycles[k] = a
			}
			a.add(r.Product, rd.Unit, rd.Value, at, received)
		}
		k := hourKey{r.Device, hour, metric}
		a := hours[k]
		if a == nil {
			a = &agg{}
			hours[k] = a
		}
		a.add(r.Product, rd.Unit, rd.Value, at, received)
	}
	return rows
}

// upsertSummaries merges the batch's summary deltas into the stored summaries, in key
// order (so two writers on PostgreSQL take row locks in the same order and do not
// deadlock). Each key occurs once per statement, as PostgreSQL's ON CONFLICT DO UPDATE
// requires.
func (s *Store) upsertSummaries(ctx context.Context, tx *sql.Tx, cycles map[cycleKey]*agg, hours map[hourKey]*agg) error {
	d := s.d
	ck := make([]cycleKey, 0, len(cycles))
	for k := range cycles {
		ck = append(ck, k)
	}
	slices.SortFunc(ck, func(a, b cycleKey) int {
		return cmp.Or(cmp.Compare(a.device, b.device), cmp.Compare(a.cycle, b.cycle), cmp.Compare(a.phase, b.phase), cmp.Compare(a.metric, b.metric))
	})
	args := make([]any, 0, 13*len(ck))
	for _, k := range ck {
		a := cycles[k]
		args = append(args, k.device, k.cycle, k.phase, k.metric, a.product, a.unit, a.min, a.max, a.sum, a.n, a.first, a.last, a.updat)
	}
	if err := s.insertRows(ctx, tx, `INSERT INTO cycle_summaries AS c
		(device, cycle, phase, metric, product, unit, min_value, max_value, sum_value, samples, first_us, last_us, updated_us) VALUES `,
		fmt.Sprintf(` ON CONFLICT (device, cycle, phase, metric) DO UPDATE SET
			product = excluded.product, unit = excluded.unit,
			min_value = %[1]s(c.min_value, excluded.min_value), max_value = %[2]s(c.max_value, excluded.max_value),
			sum_value = c.sum_value + excluded.sum_value, samples = c.samples + excluded.samples,
			first_us = %[1]s(c.first_us, excluded.first_us), last_us = %[2]s(c.last_us, excluded.last_us),
			updated_us = %[2]s(c.updated_us, excluded.updated_us)`, d.least, d.greatest),
		13, args, nil); err != nil {
		return fmt.Errorf("upsert cycle summaries: %w", err)
	}
	hk := make([]hourKey, 0, len(hours))
	for k := range hours {
		hk = append(hk, k)
	}
	slices.SortFunc(hk, func(a, b hourKey) int {
		return cmp.Or(cmp.Compare(a.device, b.device), cmp.Compare(a.hour, b.hour), cmp.Compare(a.metric, b.metric))
	})
	args = make([]any, 0, 10*len(hk))
	for _, k := range hk {
		a := hours[k]
		args = append(args, k.device, k.hour, k.metric, a.product, a.unit, a.min, a.max, a.sum, a.n, a.updat)
	}
	if err := s.insertRows(ctx, tx, `INSERT INTO hourly_summaries AS h
		(device, hour_us, metric, product, unit, min_value, max_value, sum_value, samples, updated_us) VALUES `,
		fmt.Sprintf(` ON CONFLICT (device, hour_us, metric) DO UPDATE SET
			product = excluded.product, unit = excluded.unit,
			min_value = %[1]s(h.min_value, excluded.min_value), max_value = %[2]s(h.max_value, excluded.max_value),
			sum_value = h.sum_value + excluded.sum_value, samples = h.samples + excluded.samples,
			updated_us = %[2]s(h.updated_us, excluded.updated_us)`, d.least, d.greatest),
		10, args, nil); err != nil {
		return fmt.Errorf("upsert hourly summaries: %w", err)
	}
	return nil
}

// insertRows runs head + "($1, ..., $cols), (...)" + tail over args, cols values a row, in
// as many statements as the dialect's parameter limit needs. With scan, the statements
// return rows (RETURNING) and scan reads each.
func (s *Store) insertRows(ctx context.Context, tx *sql.Tx, head, tail string, cols int, args []any, scan func(*sql.Rows) error) error {
	per := s.d.rowsPerStatement(cols)
	for len(args) > 0 {
		n := min(per, len(args)/cols)
		chunk := args[:n*cols]
		args = args[n*cols:]
		q := head + valuesList(n, cols, s.d.name == Postgres) + tail //nolint:gosec // G202: head and tail are constant SQL, valuesList only $n placeholders; every value is bound
		if scan == nil {
			if _, err := tx.ExecContext(ctx, q, chunk...); err != nil {
				return err
			}
			continue
		}
		if err := queryEach(ctx, tx, q, chunk, scan); err != nil {
			return err
		}
	}
	return nil
}

func queryEach(ctx context.Context, tx *sql.Tx, q string, args []any, scan func(*sql.Rows) error) error {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// valuesList returns "($1, ..., $cols), ($cols+1, ...), ..." for rows rows, or with "?"
// for every placeholder unless numbered. SQLite gets "?": it looks a numbered parameter's
// name up in a linear list, and modernc.org/sqlite asks for every parameter's name when it
// binds, which made a statement of n "$" parameters cost O(n²) (ten times slower than
// per-row INSERTs in BenchmarkWriteBatch).
func valuesList(rows, cols int, numbered bool) string {
	var b strings.Builder
	b.Grow(rows * cols * 7)
	p := 1
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			if numbered {
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(p))
				p++
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteByte(')')
	}
	return b.String()
}
