package cloudstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/moat-iot/moat/internal/telemetry"
)

// The transactional outbox (issue 14): every effect outside the cloud's database (a mail,
// a webhook, a call to a repair shop) and every action of a firing rule is first stored
// as an outbox row in the transaction of the change that causes it, then performed by
// the outbox worker (internal/cloud/outbox) at least once. Its Key is the idempotency key
// the effect carries downstream (the mail's Message-ID, the webhook-id, the shop's
// Idempotency-Key), so a retry after a crash between performing and recording is
// recognisable as the same effect, and enqueueing the same key twice is a no-op.

// Outbox states.
const (
	OutboxPending = "pending"
	OutboxDone    = "done"
	OutboxDead    = "dead" // gave up (permanent error or too many attempts)
)

// MaxOutboxPayloadBytes bounds an outbox row's payload.
const MaxOutboxPayloadBytes = 64 << 10

// OutboxItem is an outbox row to enqueue.
type OutboxItem struct {
	// Kind names the handler that performs it (internal/cloud/outbox's kinds).
	Kind string
	// Key is unique across the outbox: enqueueing a key again does nothing.
	Key string
	// Device and AlertID say what the row is about, for the portal and support views ('' and
	// 0: nothing). AlertID is filled in by OpenAlert for the items of an alert.
	Device  string
	AlertID int64
	// Payload is one JSON object, the handler's input.
	Payload json.RawMessage
	// NotBefore delays the first attempt; zero means at once.
	NotBefore time.Time
}

var (
	outboxKindRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	outboxKeyRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$`)
)

func (it OutboxItem) validate() error {
	var errs []error
	if !outboxKindRE.MatchString(it.Kind) {
		errs = append(errs, errors.New("kind: must be 1 to 32 lower-case letters, digits or '-'"))
	}
	if !outboxKeyRE.MatchString(it.Key) {
		errs = append(errs, errors.New("key: must be 1 to 200 letters, digits or _.:@-"))
	}
	if it.Device != "" && !telemetry.ValidDeviceID(it.Device) {
		errs = append(errs, errors.New("device: must be 64 lower-case hex digits"))
	}
	if len(it.Payload) == 0 || len(it.Payload) > MaxOutboxPayloadBytes || !json.Valid(it.Payload) || it.Payload[0] != '{' {
		errs = append(errs, fmt.Errorf("payload: must be one JSON object of at most %d bytes", MaxOutboxPayloadBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: outbox item %s: %w", ErrInvalid, it.Key, err)
	}
	return nil
}

// EnqueueOutbox stores items as pending outbox rows at now, all or nothing; an item whose
// key is enqueued already is skipped.
func (s *Store) EnqueueOutbox(ctx context.Context, now time.Time, items ...OutboxItem) error {
	for _, it := range items {
		if err := it.validate(); err != nil {
			return err
		}
	}
	return s.inTx(ctx, func(tx *sql.Tx) error { return s.enqueue(ctx, tx, now, 0, items) })
}

// enqueue inserts items in tx; alert, when not 0, is the alert they belong to.
func (s *Store) enqueue(ctx context.Context, tx *sql.Tx, now time.Time, alert int64, items []OutboxItem) error {
	for _, it := range items {
		if alert != 0 {
			it.AlertID = alert
		}
		next := now
		if it.NotBefore.After(now) {
			next = it.NotBefore
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO outbox (kind, key, device, alert_id, payload, state, next_us, created_us)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING`,
			it.Kind, it.Key, it.Device, nullID(it.AlertID), string(it.Payload), OutboxPending, us(next), us(now))
		if err != nil {
			return fmt.Errorf("enqueue %s: %w", it.Key, err)
		}
	}
	return nil
}
