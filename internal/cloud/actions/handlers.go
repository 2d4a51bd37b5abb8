package actions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/rules"
	"github.com/moat-iot/moat/internal/cloud/shop"
)

// Store is what the handlers need of the cloud's store (*cloudstore.Store).
type Store interface {
	ApplianceInfo(ctx context.Context, device string) (cloudstore.ApplianceInfo, error)
	CreateServiceRequest(ctx context.Context, n cloudstore.NewServiceRequest) (cloudstore.ServiceRequest, error)
	RecordReservation(ctx context.Context, r cloudstore.Reservation) (cloudstore.Reservation, error)
	CreatePrompt(ctx context.Context, p cloudstore.Prompt) (cloudstore.Prompt, error)
	EnqueueOutbox(ctx context.Context, now time.Time, items ...cloudstore.OutboxItem) error
	ListServiceRequests(ctx context.Context, f cloudstore.ServiceRequestFilter) ([]cloudstore.ServiceRequest, error)
	ListReservations(ctx context.Context, f cloudstore.ReservationFilter) ([]cloudstore.Reservation, error)
}

// Shops reserves parts at repair shops (*shop.Directory).
type Shops interface {
	Reserve(ctx context.Context, shopID, key string, r shop.ReservationRequest) (shop.Reservation, error)
}

// Deps are the handlers' dependencies.
type Deps struct {
	Store  Store
	Mailer outbox.Mailer
	// Shops is nil when no shops file is configured: every reservation is no_shop.
	Shops Shops
	// Settings returns a product's settings from its rule file (false: no rule file).
	Settings func(product string) (rules.Settings, bool)
	// PortalURL is the owners' portal's absolute URL ("https://cloud.example/portal/"); a
	// mail links to PortalURL + "appliances/" + device.
	PortalURL string
	// Webhooks are the configured webhook endpoints' names: each gets an event of what
	// the handlers did (service request opened, part reservation, prompt).
	Webhooks []string
	// From is the sender address the mailer uses; its domain ends the Message-IDs.
	From   string
	Now    func() time.Time
	Logger *slog.Logger
}

// Validate reports every missing dependency.
func (d Deps) Validate() error {
	var errs []error
	if d.Store == nil {
		errs = append(errs, errors.New("actions: store required"))
	}
	if d.Mailer == nil {
		errs = append(errs, errors.New("actions: mailer required"))
	}
	if d.Settings == nil || d.Now == nil || d.Logger == nil {
		errs = append(errs, errors.New("actions: settings, now and logger required"))
	}
	if u, err := url.Parse(d.PortalURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("actions: portal url %q must be an absolute http(s) URL", d.PortalURL))
	}
	return errors.Join(errs...)
}

type handlers struct{ Deps }

// Handlers returns the handlers of KindNotify, KindServiceRequest, KindReservePart and
// KindPrompt for the outbox worker.
func Handlers(d Deps) (outbox.Handlers, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	h := handlers{d}
	return outbox.Handlers{
		outbox.KindNotify:         h.notify,
		outbox.KindServiceRequest: h.serviceRequest,
		outbox.KindReservePart:    h.reservePart,
		outbox.KindPrompt:         h.prompt,
	}, nil
}

// ResultNoVerifiedOwner is a notify row's result when nobody may be mailed.
const ResultNoVerifiedOwner = "no verified owner"

// notify mails the appliance's owner, resolved when the row runs (an owner who claimed
// or verified since the alert opened is mailed; one who handed the appliance over is
// not). Only a verified address is mailed: an unverified one may be a stranger's,
// typed by someone else (attacked by TestNotify_MailsOnlyVerifiedOwner).
func (h handlers) notify(ctx context.Context, job outbox.Job) (string, error) {
	p, err := decodePayload(job)
	if err != nil {
		return "", err
	}
	info, err := h.Store.ApplianceInfo(ctx, p.Device)
	if err != nil {
		return "", fmt.Errorf("notify: appliance %s: %w", shortDevice(p.Device), err)
	}
	if info.OwnerID == 0 || !info.OwnerVerified || info.OwnerEmail == "" {
		return ResultNoVerifiedOwner, nil
	}
	m := h.alertMail(info, p)
	m.MessageID = outbox.MessageID(job.Key, h.From) // the same key, the same message: one copy in the mailbox
	if err := h.Mailer.Send(ctx, m); err != nil {
		return "", fmt.Errorf("notify: mail owner %d: %w", info.OwnerID, err)
	}
	return fmt.Sprintf("mailed owner %d", info.OwnerID), nil
}

// serviceRequest opens a service request for the alert, for its owner at this time (none
// when unclaimed): one per alert, so a second run is done.
func (h handlers) serviceRequest(ctx context.Context, job outbox.Job) (string, error) {
	p, err := decodePayload(job)
	if err != nil {
		return "", err
	}
	if job.AlertID == 0 {
		return "", outbox.Permanent(fmt.Errorf("service-request row %s: no alert", job.Key))
	}
	info, err := h.Store.ApplianceInfo(ctx, p.Device)
	if err != nil {
		return "", fmt.Errorf("service request: appliance %s: %w", shortDevice(p.Device), err)
	}
	desc := truncate(p.Arg+"\n\nAlert "+p.Rule+": "+p.Message, cloudstore.MaxDescriptionBytes)
	r, err := h.Store.CreateServiceRequest(ctx, cloudstore.NewServiceRequest{Device: p.Device, OwnerID: info.OwnerID, AlertID: job.AlertID,
		Source: cloudstore.SourceRule, Description: desc, CreatedAt: h.Now()})
	result := fmt.Sprintf("service request %d", r.ID)
	switch {
	case errors.Is(err, cloudstore.ErrConflict):
		// A run after a crash: the request exists; make sure of its event below.
		rs, err := h.Store.ListServiceRequests(ctx, cloudstore.ServiceRequestFilter{AlertID: job.AlertID, Limit: 1})
		if err != nil || len(rs) == 0 {
			return "", fmt.Errorf("service request of alert %d: %w", job.AlertID, errors.Join(err, cloudstore.ErrNotFound))
		}
		r, result = rs[0], "service request exists already"
	case errors.Is(err, cloudstore.ErrInvalid):
		return "", outbox.Permanent(err)
	case err != nil:
		return "", err
	}
	if err := h.event(ctx, job, p, WebhookServiceRequestOpened, "", ServiceRequestEvent{ID: r.ID, Product: p.Product, Device: p.Device,
		Rule: p.Rule, AlertOpened: p.OpenedAt, Description: r.Description}); err != nil {
		return "", err
	}
	return result, nil
}

// reservePart reserves the part at the appliance's repair shop when it is under
// warranty: a sale is recorded and its date plus the product's warranty is after now
// (the handler's clock, never a time a device sent). Out of warranty, no shop is called.
// The shop call carries the row's key as its Idempotency-Key, so the handler run again
// after a crash gets the same reservation back; the store keeps one outcome per alert
// and part. Attacked by TestReservePart_NoReservationOutOfWarranty and
// TestReservePart_OneReservationAcrossRetries.
func (h handlers) reservePart(ctx context.Context, job outbox.Job) (string, error) {
	p, err := decodePayload(job)
	if err != nil {
		return "", err
	}
	if job.AlertID == 0 {
		return "", outbox.Permanent(fmt.Errorf("reserve-part row %s: no alert", job.Key))
	}
	settings, ok := h.Settings(p.Product)
	if !ok {
		return "", outbox.Permanent(fmt.Errorf("reserve-part: product %s has no rule file", p.Product))
	}
	info, err := h.Store.ApplianceInfo(ctx, p.Device)
	if err != nil {
		return "", fmt.Errorf("reserve-part: appliance %s: %w", shortDevice(p.Device), err)
	}
	now := h.Now()
	rec := cloudstore.Reservation{Device: p.Device, AlertID: job.AlertID, Part: p.Arg, Shop: info.Shop, CreatedAt: now}
	if _, declared := settings.Parts[p.Arg]; !declared {
		rec.State, rec.Reason = cloudstore.ReservationFailed, "the part is no longer declared in the product's rule file"
		return h.record(ctx, job, p, rec)
	}
	if reason := outOfWarranty(info, settings.Warranty, now); reason != "" {
		rec.State, rec.Reason = cloudstore.ReservationOutOfWarranty, reason
		return h.record(ctx, job, p, rec)
	}
	if info.Shop == "" || h.Shops == nil {
		rec.State, rec.Reason = cloudstore.ReservationNoShop, "the appliance has no repair shop"
		return h.record(ctx, job, p, rec)
	}
	res, err := h.Shops.Reserve(ctx, info.Shop, job.Key, shop.ReservationRequest{Part: p.Arg, Device: p.Device, Product: p.Product,
		CustomerRef: fmt.Sprintf("moat-alert-%d", job.AlertID), Reason: oneLine("alert "+p.Rule+": "+p.Message, shop.MaxReasonBytes)})
	switch {
	case errors.Is(err, shop.ErrUnknownShop):
		rec.State, rec.Reason = cloudstore.ReservationNoShop, fmt.Sprintf("shop %s is not in the shops file", info.Shop)
	case errors.Is(err, shop.ErrOutOfStock):
		rec.State, rec.Reason = cloudstore.ReservationOutOfStock, fmt.Sprintf("shop %s has no %s in stock", info.Shop, p.Arg)
	case err != nil && shop.Temporary(err):
		return "", fmt.Errorf("reserve-part: %w", err) // the worker retries, with the same key
	case err != nil:
		h.Logger.ErrorContext(ctx, "repair shop refused a reservation", "shop", info.Shop, "part", p.Arg, "alert", job.AlertID, "error", err)
		rec.State, rec.Reason = cloudstore.ReservationFailed, oneLine(err.Error(), 1000)
	default:
		rec.State, rec.Reference = cloudstore.ReservationReserved, res.ID
	}
	return h.record(ctx, job, p, rec)
}

// outOfWarranty says why an appliance is out of warranty at now, or "" when it is in.
func outOfWarranty(info cloudstore.ApplianceInfo, warranty time.Duration, now time.Time) string {
	switch {
	case info.SoldAt.IsZero():
		return "no sale is recorded, so the warranty cannot be checked"
	case warranty <= 0:
		return "the product's rule file declares no warranty"
	case !info.SoldAt.Add(warranty).After(now):
		return fmt.Sprintf("the warranty ended on %s", info.SoldAt.Add(warranty).UTC().Format(time.DateOnly))
	}
	return ""
}

func (h handlers) record(ctx context.Context, job outbox.Job, p Payload, r cloudstore.Reservation) (string, error) {
	_, err := h.Store.RecordReservation(ctx, r)
	result := r.State + ": " + r.Reason
	if r.State == cloudstore.ReservationReserved {
		result = fmt.Sprintf("reserved %s at %s", r.Reference, r.Shop)
	}
	switch {
	case errors.Is(err, cloudstore.ErrConflict):
		// A run after a crash: report the outcome recorded first.
		rs, err := h.Store.ListReservations(ctx, cloudstore.ReservationFilter{AlertID: job.AlertID, Limit: 100})
		if err != nil {
			return "", err
		}
		for _, x := range rs {
			if x.Part == r.Part {
				r = x
			}
		}
		result = "reservation recorded already"
	case errors.Is(err, cloudstore.ErrInvalid):
		return "", outbox.Permanent(err)
	case err != nil:
		return "", err
	}
	if err := h.event(ctx, job, p, WebhookPartReservation, r.Part, ReservationEvent{Product: p.Product, Device: p.Device, Rule: p.Rule,
		AlertOpened: p.OpenedAt, Part: r.Part, Shop: r.Shop, State: r.State, Reference: r.Reference, Reason: r.Reason}); err != nil {
		return "", err
	}
	return result, nil
}

// prompt stores a purchase prompt for the alert and enqueues its mail to a verified owner.
// The store keeps one prompt per alert and consumable and the mail's key names the alert,
// so an alert episode, which for a consumable ends only with a refill, prompts once
// (TestPrompt_OncePerRefill).
func (h handlers) prompt(ctx context.Context, job outbox.Job) (string, error) {
	p, err := decodePayload(job)
	if err != nil {
		return "", err
	}
	if job.AlertID == 0 {
		return "", outbox.Permanent(fmt.Errorf("prompt row %s: no alert", job.Key))
	}
	settings, ok := h.Settings(p.Product)
	if !ok {
		return "", outbox.Permanent(fmt.Errorf("prompt: product %s has no rule file", p.Product))
	}
	c, ok := settings.Consumables[p.Arg]
	if !ok {
		return "", outbox.Permanent(fmt.Errorf("prompt: consumable %s is no longer declared for %s", p.Arg, p.Product))
	}
	now := h.Now()
	result := "prompted"
	_, err = h.Store.CreatePrompt(ctx, cloudstore.Prompt{Device: p.Device, AlertID: job.AlertID, Consumable: c.Name, BuyURL: c.BuyURL, CreatedAt: now})
	switch {
	case errors.Is(err, cloudstore.ErrConflict):
		result = "prompted already" // a run after a crash: make sure of the mail below
	case errors.Is(err, cloudstore.ErrInvalid):
		return "", outbox.Permanent(err)
	case err != nil:
		return "", err
	}
	if err := h.event(ctx, job, p, WebhookPromptCreated, c.Name, PromptEvent{Product: p.Product, Device: p.Device, Rule: p.Rule,
		AlertOpened: p.OpenedAt, Consumable: c.Name, BuyURL: c.BuyURL}); err != nil {
		return "", err
	}
	info, err := h.Store.ApplianceInfo(ctx, p.Device)
	if err != nil {
		return "", fmt.Errorf("prompt: appliance %s: %w", shortDevice(p.Device), err)
	}
	if info.OwnerID == 0 || !info.OwnerVerified || info.OwnerEmail == "" {
		return result + "; " + ResultNoVerifiedOwner, nil
	}
	mail := h.promptMail(info, p, c)
	raw, _ := json.Marshal(mail) // plain strings: cannot fail
	item := cloudstore.OutboxItem{Kind: outbox.KindEmail, Key: fmt.Sprintf("prompt-mail:%d:%s", job.AlertID, c.Name), Device: p.Device, AlertID: job.AlertID, Payload: raw}
	if err := h.Store.EnqueueOutbox(ctx, now, item); err != nil {
		return "", fmt.Errorf("prompt: enqueue mail: %w", err)
	}
	return result + "; mail enqueued", nil
}

// SettingsOf returns a Deps.Settings over parsed rule files (one per product).
func SettingsOf(files []*rules.File) func(product string) (rules.Settings, bool) {
	m := make(map[string]rules.Settings, len(files))
	for _, f := range files {
		m[f.Product] = f.Settings
	}
	return func(product string) (rules.Settings, bool) {
		s, ok := m[product]
		return s, ok
	}
}
