package cloudstore

import (
	"context"
	"database/sql"
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
		var err error
		res, err = s.writeBatch(ctx, tx, records)
		return err
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

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
