package actions_test

import (
	"encoding/json"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/actions"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/rules"
)

// TestEvents_OncePerActionAcrossRetries: what the handlers did is reported to every
// webhook endpoint once, after it was stored, however often a handler runs (a crash
// after the shop answered, a row run twice).
func TestEvents_OncePerActionAcrossRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 5)
	var err error
	e.handlers, err = actions.Handlers(actions.Deps{Store: e.store, Mailer: e.mailer, PortalURL: portal,
		Webhooks: []string{"crm", "erp"}, Settings: actions.SettingsOf([]*rules.File{e.file}),
		Now: func() time.Time { return e.now }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	heat, low := deviceID(70), deviceID(71)
	e.owner(low, "bo@example.com", true)
	e.sale(heat, e.now.AddDate(-5, 0, 0), "seattle-north") // out of warranty: the shop is never asked
	a, jobs := e.open(e.transition("heater-drying-anomaly", heat, t0))
	b, jobs2 := e.open(e.transition("rinse-agent-low", low, t0))
	e.store.failRecords.Store(1)
	for _, j := range append(jobs, jobs2...) {
		if j.Kind == outbox.KindNotify {
			continue
		}
		for range 2 {
			if _, err := e.run(j); err != nil && j.Kind != outbox.KindReservePart {
				t.Fatalf("%s: %v", j.Kind, err)
			}
		}
		if j.Kind == outbox.KindReservePart {
			if _, err := e.run(j); err != nil {
				t.Fatalf("%s: %v", j.Kind, err)
			}
		}
	}
	var got []string
	for _, alert := range []int64{a.ID, b.ID} {
		rows, err := e.store.ListOutbox(t.Context(), cloudstore.OutboxFilter{AlertID: alert, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Kind != outbox.KindWebhook {
				continue
			}
			var p outbox.WebhookPayload
			if err := json.Unmarshal(r.Payload, &p); err != nil {
				t.Fatal(err)
			}
			got = append(got, p.Endpoint+" "+p.Event.Type+" "+string(p.Event.Data))
		}
	}
	sort.Strings(got)
	var types []string
	for _, g := range got {
		f := strings.Fields(g)
		types = append(types, f[0]+" "+f[1])
	}
	want := []string{"crm part.reservation", "crm prompt.created", "crm service_request.opened",
		"erp part.reservation", "erp prompt.created", "erp service_request.opened"}
	if strings.Join(types, "|") != strings.Join(want, "|") {
		t.Fatalf("webhook events = %q, want one of each per endpoint %q", got, want)
	}
	if !strings.Contains(got[0], `"state":"out_of_warranty"`) || !strings.Contains(got[1], `"consumable":"rinse-agent"`) {
		t.Errorf("event data = %q", got)
	}
}
