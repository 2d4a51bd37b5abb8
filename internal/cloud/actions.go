package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"time"

	"github.com/moat-iot/moat/internal/cloud/actions"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/diag"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/rules"
)

// actionRunner stores the rules engine's transitions as alerts and runs the actions of
// those that fire. It runs on the ingest's goroutine (the hook) and the tick's; the store
// keeps one open alert per rule and device, so a transition seen twice (two goroutines, a
// restart) opens one alert.
type actionRunner struct {
	store *cloudstore.Store
	diag  *diag.Service
	log   *slog.Logger
	now   func() time.Time
	// outbox performs the actions other than diagnostics, which are stored with the alert
	// as outbox rows (internal/cloud/actions.Expand); webhooks are the endpoints' names.
	outbox   *outbox.Worker
	webhooks []string
}

// evidence is the JSON an alert keeps of the samples that fired it.
type evidence struct {
	Time     time.Time          `json:"time"`
	Cycle    string             `json:"cycle,omitempty"`
	Phase    string             `json:"phase,omitempty"`
	Readings map[string]float64 `json:"readings"`
}

func (r *actionRunner) apply(ctx context.Context, ts []rules.Transition) {
	for _, t := range ts {
		switch t.Change {
		case rules.Fire:
			r.fire(ctx, t)
		case rules.Clear:
			r.clear(ctx, t)
		}
	}
}

func (r *actionRunner) fire(ctx context.Context, t rules.Transition) {
	ev := make([]evidence, 0, len(t.Evidence))
	for _, s := range t.Evidence {
		ev = append(ev, evidence{Time: s.Time, Cycle: s.Cycle, Phase: s.Phase, Readings: s.Readings})
	}
	raw, _ := json.Marshal(ev) // plain values: cannot fail
	value := t.Value
	if math.IsNaN(value) || math.IsInf(value, 0) {
		value = 0
	}
	// The rule's other actions are stored with the alert, in its transaction, as outbox
	// rows keyed by the episode: an alert never exists without them, and the same episode
	// seen twice (a restart, a second replica) enqueues them once.
	a, err := r.store.OpenAlert(ctx, cloudstore.NewAlert{Product: t.Product, Device: t.Device, Rule: t.Rule,
		Severity: string(t.Severity), OpenedAt: t.At, Value: value, Message: truncate(t.Message, 1024), Evidence: raw,
		Outbox: actions.Expand(t, r.webhooks)})
	if errors.Is(err, cloudstore.ErrConflict) {
		return // already open: this episode fired before (a restart, a second replica)
	}
	if err != nil {
		r.log.ErrorContext(ctx, "alert not stored", "rule", t.Rule, "device", t.Device, "error", err)
		return
	}
	r.log.InfoContext(ctx, "alert", "alert", a.ID, "rule", t.Rule, "severity", t.Severity, "device", t.Device, "message", t.Message)
	if r.outbox != nil {
		r.outbox.Kick()
	}
	for _, act := range t.Actions {
		switch act.Name {
		case rules.ActionNotify, rules.ActionServiceRequest, rules.ActionReservePart, rules.ActionPrompt:
			// enqueued with the alert
		case "diagnostics":
			d, err := r.diag.Run(ctx, diag.Request{Device: t.Device, Command: act.Arg, RequestedBy: "rule:" + t.Rule, AlertID: a.ID})
			if err != nil {
				r.log.ErrorContext(ctx, "diagnostics for an alert not requested", "alert", a.ID, "command", act.Arg, "error", err)
				continue
			}
			r.log.InfoContext(ctx, "diagnostics requested for an alert", "alert", a.ID, "diagnostic", d.ID, "command", act.Arg, "device", t.Device)
		default:
			// Parse accepts only the actions the cloud registered (rules.StandardActions).
			r.log.ErrorContext(ctx, "unknown rule action", "action", act.Name, "rule", t.Rule)
		}
	}
}

func (r *actionRunner) clear(ctx context.Context, t rules.Transition) {
	open, _, err := r.store.ListAlerts(ctx, cloudstore.AlertFilter{State: cloudstore.AlertOpen, Device: t.Device, Rule: t.Rule, Product: t.Product, Limit: 10})
	if err != nil {
		r.log.ErrorContext(ctx, "alert not cleared", "rule", t.Rule, "device", t.Device, "error", err)
		return
	}
	for _, a := range open {
		if _, err := r.store.ClearAlert(ctx, a.ID, t.At); err != nil && !errors.Is(err, cloudstore.ErrConflict) {
			r.log.ErrorContext(ctx, "alert not cleared", "alert", a.ID, "error", err)
			continue
		}
		r.log.InfoContext(ctx, "alert cleared", "alert", a.ID, "rule", t.Rule, "device", t.Device)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 { // do not cut a UTF-8 sequence
		n--
	}
	return s[:n]
}
