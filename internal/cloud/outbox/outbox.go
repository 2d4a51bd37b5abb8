// Package outbox performs the cloud's outbox rows (cloudstore.OutboxItem): every effect
// outside the cloud's database and every action of a firing rule. The row is written in
// the transaction of the change that causes it; a Worker claims due rows under a lease,
// runs the Handler of their kind, and records the outcome, retrying temporary failures
// with exponential backoff until the row is done or dead. A crash between performing an
// effect and recording it means the effect is performed again, with the same idempotency
// key (the row's Key): the mail's Message-ID, the webhook's webhook-id, the shop's
// Idempotency-Key, so the receiver keeps one.
//
// This file is the contract between the worker and the handlers; the worker, the mail
// sender and the webhook sender are the rest of the package, the rule actions' handlers
// are internal/cloud/actions.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Kinds of outbox rows.
const (
	// KindEmail is a rendered mail (EmailPayload) to send as it is.
	KindEmail = "email"
	// KindWebhook is one event (WebhookPayload) to deliver to one configured endpoint.
	KindWebhook = "webhook"
	// KindNotify mails an appliance's owner about an alert (internal/cloud/actions).
	KindNotify = "notify"
	// KindServiceRequest opens a service request for an alert (internal/cloud/actions).
	KindServiceRequest = "service-request"
	// KindReservePart reserves a part at the owner's repair shop when the appliance is
	// under warranty (internal/cloud/actions).
	KindReservePart = "reserve-part"
	// KindPrompt prompts the owner to buy a consumable (internal/cloud/actions).
	KindPrompt = "prompt"
)

// Job is one attempt at an outbox row.
type Job struct {
	ID      int64
	Kind    string
	Key     string
	Device  string
	AlertID int64
	Payload json.RawMessage
	// Attempt is 1 on the first try.
	Attempt   int
	CreatedAt time.Time
}

// Handler performs a job. It returns a short result for the record ("sent", "reserved
// R-1234 at seattle-north"); an error wrapped with Permanent ends the row as dead, any
// other error is retried later.
type Handler func(ctx context.Context, job Job) (result string, err error)

// Handlers maps kinds to their handlers.
type Handlers map[string]Handler

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying (a malformed payload, a refused recipient, a
// 4xx answer that a retry cannot change).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// EmailPayload is a KindEmail row's payload: a mail, rendered when it was enqueued.
type EmailPayload struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
}

// Mail is what a Mailer sends.
type Mail struct {
	To      string
	Subject string
	Text    string
	// MessageID is the Message-ID the mail carries, derived from the outbox row's Key, so
	// a mail sent again after a crash is the same message to the recipient's mailbox.
	MessageID string
}

// Mailer sends mail (the SMTP sender of this package; handlers use it through this
// interface).
type Mailer interface {
	Send(ctx context.Context, m Mail) error
}

// WebhookPayload is a KindWebhook row's payload: the endpoint's name in the cloud's
// configuration and the event to deliver. The row's Key is the event's webhook-id.
type WebhookPayload struct {
	Endpoint string       `json:"endpoint"`
	Event    WebhookEvent `json:"event"`
}

// WebhookEvent is the body of a webhook delivery (Standard Webhooks' envelope).
type WebhookEvent struct {
	// Type is "alert.opened", "service_request.opened", "part.reservation" or
	// "prompt.created" (internal/cloud/actions).
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}
