package cloudstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Record is one decoded stream message for WriteBatch: exactly one of Telemetry, Event and
// Reply is set.
type Record struct {
	// Seq is the message's JetStream stream sequence: the natural key that makes a
	// redelivered message a no-op.
	Seq     uint64
	Device  string
	Product string
	// ReceivedAt is when the broker stored the message (the cloud's clock); retention
	// counts from it.
	ReceivedAt time.Time
	Telemetry  *telemetry.Telemetry
	Event      *telemetry.Event
	Reply      *telemetry.DiagnosticReply
}

// Kind is the record's telemetry kind: telemetry.KindTelemetry, KindEvents or
// KindDiagnosticReply.
func (r Record) Kind() string {
	switch {
	case r.Telemetry != nil:
		return telemetry.KindTelemetry
	case r.Event != nil:
		return telemetry.KindEvents
	case r.Reply != nil:
		return telemetry.KindDiagnosticReply
	}
	return ""
}

func (r Record) validate() error {
	var errs []error
	if r.Seq == 0 || r.Seq > math.MaxInt64 {
		errs = append(errs, errors.New("seq: must be a stream sequence from 1 to 2^63-1"))
	}
	if !telemetry.ValidDeviceID(r.Device) {
		errs = append(errs, errors.New("device: must be 64 lower-case hex digits"))
	}
	if !productRE.MatchString(r.Product) {
		errs = append(errs, errors.New("product: must be 1 to 64 letters, digits, '_', '.' or '-'"))
	}
	if r.ReceivedAt.IsZero() {
		errs = append(errs, errors.New("received_at: required"))
	}
	n := 0
	var payload interface{ Validate() error }
	if r.Telemetry != nil {
		n, payload = n+1, r.Telemetry
	}
	if r.Event != nil {
		n, payload = n+1, r.Event
	}
	if r.Reply != nil {
		n, payload = n+1, r.Reply
	}
	if n != 1 {
		errs = append(errs, errors.New("exactly one of telemetry, event and reply must be set"))
	} else if err := payload.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// BatchResult says what WriteBatch did.
type BatchResult struct {
	// Stored holds the indexes (into the batch) of the records stored now, in order.
	Stored []int
	// Duplicates counts records whose sequence was stored before (redeliveries).
	Duplicates int
	// UnmatchedReplies counts stored replies that finished no diagnostic: unknown request,
	// another device's request, or one that had finished or timed out already.
	UnmatchedReplies int
}

// MaxBatch bounds the records of one WriteBatch.
const MaxBatch = 10000

// WriteBatch stores records in one transaction: raw readings, the per-cycle and hourly
// summaries they update, events, and diagnostic replies (which finish their pending or
// sent diagnostic, and the alert it belongs to). A record whose Seq was stored before is
// skipped, so writing a batch twice stores it once. An invalid record fails the whole
// batch with ErrInvalid and writes nothing.
func (s *Store) WriteBatch(ctx context.Context, records []Record) (BatchResult, error) {
	if len(records) > MaxBatch {
		return BatchResult{}, fmt.Errorf("%w: at most %d records per batch, not %d", ErrInvalid, MaxBatch, len(records))
	}
	for i, r := range records {
		if err := r.validate(); err != nil {
			return BatchResult{}, fmt.Errorf("%w: record %d (seq %d): %w", ErrInvalid, i, r.Seq, err)
		}
	}
	var res BatchResult
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res = BatchResult{}
		w, err := s.newBatchWriter(ctx, tx)
		if err != nil {
			return err
		}
		defer w.close()
		for i, r := range records {
			stored, matched, err := w.write(r)
			if err != nil {
				return fmt.Errorf("store seq %d: %w", r.Seq, err)
			}
			if !stored {
				res.Duplicates++
				continue
			}
			res.Stored = append(res.Stored, i)
			if r.Reply != nil && !matched {
				res.UnmatchedReplies++
			}
		}
		return w.flushSummaries()
	})
	if err != nil {
		return BatchResult{}, err
	}
	return res, nil
}

type cycleKey struct{ device, cycle, phase, metric string }

type hourKey struct {
	device string
	hour   int64
	metric string
}

// agg is a summary delta of one batch.
type agg struct {
	product, unit      string
	min, max, sum      float64
	n                  int64
	first, last, updat int64
}

func (a *agg) add(product, unit string, v float64, t, received int64) {
	if a.n == 0 {
		*a = agg{product: product, unit: unit, min: v, max: v, first: t, last: t}
	}
	a.product, a.unit = product, unit
	a.min, a.max, a.sum, a.n = min(a.min, v), max(a.max, v), a.sum+v, a.n+1
	a.first, a.last, a.updat = min(a.first, t), max(a.last, t), max(a.updat, received)
}

type batchWriter struct {
	ctx                      context.Context
	s                        *Store
	tx                       *sql.Tx
	ingested, reading, event *sql.Stmt
	cycles                   map[cycleKey]*agg
	hours                    map[hourKey]*agg
}

func (s *Store) newBatchWriter(ctx context.Context, tx *sql.Tx) (*batchWriter, error) {
	w := &batchWriter{ctx: ctx, s: s, tx: tx, cycles: map[cycleKey]*agg{}, hours: map[hourKey]*agg{}}
	var err error
	prep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = tx.PrepareContext(ctx, q)
		return st
	}
	w.ingested = prep(`INSERT INTO ingested (seq, received_us) VALUES ($1, $2) ON CONFLICT (seq) DO NOTHING`)
	w.reading = prep(`INSERT INTO readings (device, time_us, seq, metric, product, received_us, cycle, phase, value, unit)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`)
	w.event = prep(`INSERT INTO events (seq, device, time_us, received_us, product, name, cycle, readings, message)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`)
	if err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *batchWriter) close() {
	for _, st := range []*sql.Stmt{w.ingested, w.reading, w.event} {
		if st != nil {
			_ = st.Close()
		}
	}
}

// write stores r unless its sequence was stored before.
func (w *batchWriter) write(r Record) (stored, matched bool, err error) {
	received := us(r.ReceivedAt)
	res, err := w.ingested.ExecContext(w.ctx, seqArg(r.Seq), received)
	if err != nil {
		return false, false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return false, false, err
	}
	switch {
	case r.Telemetry != nil:
		return true, false, w.telemetry(r, received)
	case r.Event != nil:
		e := r.Event
		readings := []byte("{}")
		if len(e.Readings) > 0 {
			if readings, err = json.Marshal(e.Readings); err != nil {
				return false, false, err
			}
		}
		_, err = w.event.ExecContext(w.ctx, seqArg(r.Seq), r.Device, us(e.Time), received, r.Product, e.Name, e.Cycle, string(readings), e.Message)
		return true, false, err
	default:
		matched, err := w.s.finishFromReply(w.ctx, w.tx, r.Device, *r.Reply, r.ReceivedAt)
		return true, matched, err
	}
}

func (w *batchWriter) telemetry(r Record, received int64) error {
	t := r.Telemetry
	at := us(t.Time)
	hour := us(t.Time.Truncate(time.Hour))
	for _, metric := range sortedKeys(t.Readings) {
		rd := t.Readings[metric]
		if _, err := w.reading.ExecContext(w.ctx, r.Device, at, seqArg(r.Seq), metric, r.Product, received, t.Cycle, t.Phase, rd.Value, rd.Unit); err != nil {
			return err
		}
		if t.Cycle != "" {
			k := cycleKey{r.Device, t.Cycle, t.Phase, metric}
			a := w.cycles[k]
			if a == nil {
				a = &agg{}
				w.cycles[k] = a
			}
			a.add(r.Product, rd.Unit, rd.Value, at, received)
		}
		k := hourKey{r.Device, hour, metric}
		a := w.hours[k]
		if a == nil {
			a = &agg{}
			w.hours[k] = a
		}
		a.add(r.Product, rd.Unit, rd.Value, at, received)
	}
	return nil
}

// flushSummaries upserts the batch's summary deltas in key order (so two writers on
// PostgreSQL take row locks in the same order and do not deadlock).
func (w *batchWriter) flushSummaries() error {
	d := w.s.d
	cycleSQL := fmt.Sprintf( //nolint:gosec // G201/G202: only constant SQL and $n placeholders are formatted in; every value is bound
		`INSERT INTO cycle_summaries AS c
		(device, cycle, phase, metric, product, unit, min_value, max_value, sum_value, samples, first_us, last_us, updated_us)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		ON CONFLICT (device, cycle, phase, metric) DO UPDATE SET
			product = excluded.product, unit = excluded.unit,
			min_value = %[1]s(c.min_value, excluded.min_value), max_value = %[2]s(c.max_value, excluded.max_value),
			sum_value = c.sum_value + excluded.sum_value, samples = c.samples + excluded.samples,
			first_us = %[1]s(c.first_us, excluded.first_us), last_us = %[2]s(c.last_us, excluded.last_us),
			updated_us = %[2]s(c.updated_us, excluded.updated_us)`, d.least, d.greatest)
	ck := make([]cycleKey, 0, len(w.cycles))
	for k := range w.cycles {
		ck = append(ck, k)
	}
	slices.SortFunc(ck, func(a, b cycleKey) int {
		return cmp.Or(cmp.Compare(a.device, b.device), cmp.Compare(a.cycle, b.cycle), cmp.Compare(a.phase, b.phase), cmp.Compare(a.metric, b.metric))
	})
	for _, k := range ck {
		a := w.cycles[k]
		if _, err := w.tx.ExecContext(w.ctx, cycleSQL, k.device, k.cycle, k.phase, k.metric, a.product, a.unit,
			a.min, a.max, a.sum, a.n, a.first, a.last, a.updat); err != nil {
			return fmt.Errorf("upsert cycle summary: %w", err)
		}
	}
	hourSQL := fmt.Sprintf( //nolint:gosec // G201/G202: only constant SQL and $n placeholders are formatted in; every value is bound
		`INSERT INTO hourly_summaries AS h
		(device, hour_us, metric, product, unit, min_value, max_value, sum_value, samples, updated_us)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (device, hour_us, metric) DO UPDATE SET
			product = excluded.product, unit = excluded.unit,
			min_value = %[1]s(h.min_value, excluded.min_value), max_value = %[2]s(h.max_value, excluded.max_value),
			sum_value = h.sum_value + excluded.sum_value, samples = h.samples + excluded.samples,
			updated_us = %[2]s(h.updated_us, excluded.updated_us)`, d.least, d.greatest)
	hk := make([]hourKey, 0, len(w.hours))
	for k := range w.hours {
		hk = append(hk, k)
	}
	slices.SortFunc(hk, func(a, b hourKey) int {
		return cmp.Or(cmp.Compare(a.device, b.device), cmp.Compare(a.hour, b.hour), cmp.Compare(a.metric, b.metric))
	})
	for _, k := range hk {
		a := w.hours[k]
		if _, err := w.tx.ExecContext(w.ctx, hourSQL, k.device, k.hour, k.metric, a.product, a.unit,
			a.min, a.max, a.sum, a.n, a.updat); err != nil {
			return fmt.Errorf("upsert hourly summary: %w", err)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
