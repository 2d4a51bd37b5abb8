// Package actions turns a firing rule's actions into outbox rows (Expand) and performs
// them (Handlers): mail the owner (notify), open a service request, reserve a part at the
// owner's repair shop under warranty (reserve-part), prompt the owner to buy a
// consumable (prompt), and tell the configured webhook endpoints that an alert opened.
//
// Every row's Key names the alert's episode (product, device, rule and the time it
// opened), so the rows of an alert opened twice (two replicas, a restart) are enqueued
// once, and every handler may run again after a crash between its effect and the
// worker's record of it: the mail carries a Message-ID derived from the key, the shop
// call carries the key as its Idempotency-Key, and the store keeps one service request,
// one reservation and one prompt per alert (ErrConflict, taken as done).
//
// What the handlers trust: the outbox rows (the cloud wrote them), the store, the rule
// files' settings. What they do not: a repair shop's replies (internal/cloud/shop decodes
// them strictly) and an appliance's sale record alone (a part is reserved only while the
// sale's date plus the product's warranty is after the handler's clock, never on a time a
// device reported; attacked by TestReservePart_NoReservationOutOfWarranty). Mail goes
// only to an owner who verified their address (TestNotify_MailsOnlyVerifiedOwner).
// Handlers are safe for concurrent use.
package actions

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/rules"
)

// WebhookAlertOpened is the webhook event type of an alert opening.
const WebhookAlertOpened = "alert.opened"

// maxMessageBytes bounds an alert message carried in a payload (the store keeps 1024).
const maxMessageBytes = 1024

// Payload is the payload of the notify, service-request, reserve-part and prompt rows:
// the alert as it opened and the action's argument.
type Payload struct {
	Product  string    `json:"product"`
	Device   string    `json:"device"`
	Rule     string    `json:"rule"`
	Severity string    `json:"severity"`
	OpenedAt time.Time `json:"opened_at"`
	Message  string    `json:"message"`
	Value    float64   `json:"value"`
	// Arg is the action's argument: the recipient (notify), the description
	// (service-request), the part number (reserve-part) or the consumable (prompt).
	Arg string `json:"arg"`
}

// AlertEvent is the data of an "alert.opened" webhook event.
type AlertEvent struct {
	Product  string    `json:"product"`
	Device   string    `json:"device"`
	Rule     string    `json:"rule"`
	Severity string    `json:"severity"`
	OpenedAt time.Time `json:"opened_at"`
	Message  string    `json:"message"`
	Value    float64   `json:"value"`
}

// kinds maps a rule action to its outbox kind; diagnostics is absent: the cloud runs it
// itself, at once.
var kinds = map[string]string{
	rules.ActionNotify:         outbox.KindNotify,
	rules.ActionServiceRequest: outbox.KindServiceRequest,
	rules.ActionReservePart:    outbox.KindReservePart,
	rules.ActionPrompt:         outbox.KindPrompt,
}

var keyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$`)

// Key returns the outbox key of an action of an alert episode: kind, the argument when
// one rule may name the action more than once with different arguments (reserve-part,
// prompt, a webhook endpoint), then product, device, rule and the opening time in unix
// microseconds. A key too long or with characters a key may not hold (over 200 bytes:
// a long product and rule) is kind and the SHA-256 of that text instead; either way the
// same episode and action give the same key.
func Key(kind, arg, product, device, rule string, openedAt time.Time) string {
	parts := []string{kind}
	if arg != "" {
		parts = append(parts, arg)
	}
	parts = append(parts, product, device, rule, strconv.FormatInt(openedAt.UnixMicro(), 10))
	k := strings.Join(parts, ":")
	if keyRE.MatchString(k) {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return kind + ":" + hex.EncodeToString(sum[:])
}

// Expand returns the outbox rows of a Fire transition: one per action but diagnostics
// (and any action this package does not know), and one "alert.opened" webhook per
// endpoint. A Clear returns none. Two calls with the same transition return the same
// rows (TestExpand_KeysStable); the caller stores them with the alert
// (cloudstore.NewAlert.Outbox), which fills in their AlertID.
func Expand(t rules.Transition, webhookEndpoints []string) []cloudstore.OutboxItem {
	if t.Change != rules.Fire {
		return nil
	}
	value := t.Value
	if math.IsNaN(value) || math.IsInf(value, 0) {
		value = 0 // JSON has no NaN; the alert keeps 0 too
	}
	msg := truncate(t.Message, maxMessageBytes)
	var out []cloudstore.OutboxItem
	for _, a := range t.Actions {
		kind, ok := kinds[a.Name]
		if !ok {
			continue
		}
		arg := ""
		if a.Name == rules.ActionReservePart || a.Name == rules.ActionPrompt {
			arg = a.Arg
		}
		raw, _ := json.Marshal(Payload{Product: t.Product, Device: t.Device, Rule: t.Rule, Severity: string(t.Severity),
			OpenedAt: t.At.UTC(), Message: msg, Value: value, Arg: a.Arg}) // plain values: cannot fail
		out = append(out, cloudstore.OutboxItem{Kind: kind, Key: Key(kind, arg, t.Product, t.Device, t.Rule, t.At), Device: t.Device, Payload: raw})
	}
	if len(webhookEndpoints) > 0 {
		data, _ := json.Marshal(AlertEvent{Product: t.Product, Device: t.Device, Rule: t.Rule, Severity: string(t.Severity),
			OpenedAt: t.At.UTC(), Message: msg, Value: value})
		for _, ep := range webhookEndpoints {
			raw, _ := json.Marshal(outbox.WebhookPayload{Endpoint: ep, Event: outbox.WebhookEvent{Type: WebhookAlertOpened, Timestamp: t.At.UTC(), Data: data}})
			out = append(out, cloudstore.OutboxItem{Kind: outbox.KindWebhook, Key: Key(outbox.KindWebhook, ep+":"+WebhookAlertOpened, t.Product, t.Device, t.Rule, t.At),
				Device: t.Device, Payload: raw})
		}
	}
	return out
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

// oneLine drops control characters and bounds s to n bytes: what goes into a mail
// subject or a shop's reason field.
func oneLine(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 {
			return ' '
		}
		return r
	}, s)
	return truncate(s, n)
}

func shortDevice(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// decodePayload reads a row's payload strictly: it is the cloud's own, and a row that
// does not decode can never succeed (outbox.Permanent).
func decodePayload(job outbox.Job) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(strings.NewReader(string(job.Payload)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, outbox.Permanent(fmt.Errorf("%s row %s: payload: %w", job.Kind, job.Key, err))
	}
	if p.Device == "" || p.Product == "" {
		return p, outbox.Permanent(fmt.Errorf("%s row %s: payload: device and product required", job.Kind, job.Key))
	}
	return p, nil
}
