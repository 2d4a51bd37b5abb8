package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
)

// Webhook event types of what the actions did, besides WebhookAlertOpened.
const (
	WebhookServiceRequestOpened = "service_request.opened"
	WebhookPartReservation      = "part.reservation"
	WebhookPromptCreated        = "prompt.created"
)

// ServiceRequestEvent is the data of a "service_request.opened" event.
type ServiceRequestEvent struct {
	ID          int64     `json:"id"`
	Product     string    `json:"product"`
	Device      string    `json:"device"`
	Rule        string    `json:"rule"`
	AlertOpened time.Time `json:"alert_opened_at"`
	Description string    `json:"description"`
}

// ReservationEvent is the data of a "part.reservation" event: the outcome, reserved or
// why not (out_of_warranty, no_shop, out_of_stock, failed).
type ReservationEvent struct {
	Product     string    `json:"product"`
	Device      string    `json:"device"`
	Rule        string    `json:"rule"`
	AlertOpened time.Time `json:"alert_opened_at"`
	Part        string    `json:"part"`
	Shop        string    `json:"shop"`
	State       string    `json:"state"`
	Reference   string    `json:"reference,omitempty"`
	Reason      string    `json:"reason,omitempty"`
}

// PromptEvent is the data of a "prompt.created" event.
type PromptEvent struct {
	Product     string    `json:"product"`
	Device      string    `json:"device"`
	Rule        string    `json:"rule"`
	AlertOpened time.Time `json:"alert_opened_at"`
	Consumable  string    `json:"consumable"`
	BuyURL      string    `json:"buy_url"`
}

// event enqueues a webhook event of what a handler did, one row per endpoint. Its key
// names the endpoint, the type, the alert's episode and sub (the part or consumable), so
// a handler run again after a crash enqueues nothing new: the event is sent once, after
// the change it reports was stored.
func (h handlers) event(ctx context.Context, job outbox.Job, p Payload, typ, sub string, data any) error {
	if len(h.Webhooks) == 0 {
		return nil
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return outbox.Permanent(fmt.Errorf("%s event: %w", typ, err))
	}
	now := h.Now()
	items := make([]cloudstore.OutboxItem, 0, len(h.Webhooks))
	for _, ep := range h.Webhooks {
		body, _ := json.Marshal(outbox.WebhookPayload{Endpoint: ep, Event: outbox.WebhookEvent{Type: typ, Timestamp: now.UTC(), Data: raw}}) // plain values
		items = append(items, cloudstore.OutboxItem{Kind: outbox.KindWebhook, Key: Key(outbox.KindWebhook, ep+":"+typ+":"+sub, p.Product, p.Device, p.Rule, p.OpenedAt),
			Device: p.Device, AlertID: job.AlertID, Payload: body})
	}
	if err := h.Store.EnqueueOutbox(ctx, now, items...); err != nil {
		return fmt.Errorf("enqueue %s event: %w", typ, err)
	}
	return nil
}
