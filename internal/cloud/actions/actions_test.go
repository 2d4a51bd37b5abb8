package actions_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/cloud/actions"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/rules"
)

// TestExpand_KeysStable: the same transition expands to the same rows (so an alert opened
// twice enqueues once); another episode to other keys; diagnostics is not a row.
func TestExpand_KeysStable(t *testing.T) {
	t.Parallel()
	e := &env{t: t, file: exampleRules(t)}
	dev := deviceID(1)
	tr := e.transition("heater-drying-anomaly", dev, t0)
	a := actions.Expand(tr, []string{"crm", "ops"})
	b := actions.Expand(tr, []string{"crm", "ops"})
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("Expand() twice differs (-first +second):\n%s", diff)
	}
	var kinds []string
	for _, it := range a {
		kinds = append(kinds, it.Kind)
		if it.Device != dev || !json.Valid(it.Payload) {
			t.Errorf("row %s: device %q, payload %s", it.Key, it.Device, it.Payload)
		}
	}
	want := []string{outbox.KindNotify, outbox.KindServiceRequest, outbox.KindReservePart, outbox.KindWebhook, outbox.KindWebhook}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("Expand() kinds (-want +got):\n%s", diff)
	}
	if a[0].Key != "notify:DW100:"+dev+":heater-drying-anomaly:"+"1782892800000000" {
		t.Errorf("notify key = %s", a[0].Key)
	}
	if !strings.HasPrefix(a[2].Key, "reserve-part:"+heater+":DW100:") {
		t.Errorf("reserve-part key = %s, want the part in it", a[2].Key)
	}
	var wp outbox.WebhookPayload
	if err := json.Unmarshal(a[3].Payload, &wp); err != nil || wp.Endpoint != "crm" || wp.Event.Type != actions.WebhookAlertOpened || !wp.Event.Timestamp.Equal(t0) {
		t.Errorf("webhook payload = %+v, %v", wp, err)
	}
	if a[3].Key == a[4].Key {
		t.Errorf("two endpoints share the key %s", a[3].Key)
	}
	other := actions.Expand(e.transition("heater-drying-anomaly", dev, t0.Add(time.Microsecond)), nil)
	if other[0].Key == a[0].Key {
		t.Errorf("another episode has the same key %s", a[0].Key)
	}
	clr := tr
	clr.Change = rules.Clear
	if got := actions.Expand(clr, []string{"crm"}); len(got) != 0 {
		t.Errorf("Expand(Clear) = %v, want none", got)
	}
}

// TestExpand_LongNamesStillValidKeys: a long product and rule name hash into a key the
// outbox accepts; a NaN value still makes JSON.
func TestExpand_LongNamesStillValidKeys(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("p", 64)
	tr := rules.Transition{Change: rules.Fire, Rule: strings.Repeat("r", 64), Product: long, Device: deviceID(2), At: t0, Severity: rules.SeverityInfo,
		Actions: []rules.Action{{Name: "notify", Arg: "owner"}, {Name: "diagnostics", Arg: "x"}}}
	tr.Value = 0
	tr.Value /= tr.Value // NaN
	items := actions.Expand(tr, []string{"endpoint with spaces"})
	if len(items) != 2 {
		t.Fatalf("Expand() = %d rows, want 2", len(items))
	}
	s, err := cloudstore.OpenSQLite(t.Context(), t.TempDir()+"/c.db")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.EnqueueOutbox(t.Context(), t0, items...); err != nil {
		t.Errorf("EnqueueOutbox(Expand(long names)) = %v", err)
	}
}

// TestReservePart_NoReservationOutOfWarranty: an appliance sold longer ago than the
// warranty, or with no sale recorded, gets no reservation, and the shop hears nothing.
func TestReservePart_NoReservationOutOfWarranty(t *testing.T) {
	t.Parallel()
	onBothStores(t, 5, func(t *testing.T, e *env) {
		old, unsold, justExpired := deviceID(10), deviceID(11), deviceID(12)
		e.sale(old, e.now.AddDate(-3, 0, 0), "seattle-north")
		e.sale(justExpired, e.now.Add(-2*rules.Year), "seattle-north") // ends exactly now
		for _, dev := range []string{old, unsold, justExpired} {
			a, jobs := e.open(e.transition("heater-drying-anomaly", dev, t0))
			res, err := e.run(job(t, jobs, outbox.KindReservePart))
			if err != nil || !strings.HasPrefix(res, cloudstore.ReservationOutOfWarranty) {
				t.Errorf("reserve-part of %s = %q, %v, want out of warranty", dev[:4], res, err)
			}
			got, err := e.store.ListReservations(t.Context(), cloudstore.ReservationFilter{AlertID: a.ID})
			if err != nil || len(got) != 1 || got[0].State != cloudstore.ReservationOutOfWarranty || got[0].Reference != "" {
				t.Errorf("reservations of alert %d = %+v, %v, want one out_of_warranty", a.ID, got, err)
			}
		}
		if n := e.shopHits.Load(); n != 0 {
			t.Errorf("the shop got %d requests for appliances out of warranty, want 0", n)
		}
		if e.shop.Stock(heater) != 5 {
			t.Errorf("stock = %d, want 5", e.shop.Stock(heater))
		}
	})
}

// TestReservePart_OneReservationAcrossRetries: under warranty, the handler run three
// times (the first record lost in a crash after the shop answered) reserves one part.
func TestReservePart_OneReservationAcrossRetries(t *testing.T) {
	t.Parallel()
	onBothStores(t, 5, func(t *testing.T, e *env) {
		dev := deviceID(20)
		e.sale(dev, e.now.AddDate(-1, 0, 0), "seattle-north")
		a, jobs := e.open(e.transition("heater-drying-anomaly", dev, t0))
		j := job(t, jobs, outbox.KindReservePart)
		e.store.failRecords.Store(1)
		if _, err := e.run(j); err == nil {
			t.Fatal("reserve-part with the record failing = nil error, want a retry")
		}
		var results []string
		for range 2 {
			j.Attempt++
			res, err := e.run(j)
			if err != nil {
				t.Fatalf("reserve-part retry = %v", err)
			}
			results = append(results, res)
		}
		if results[0] != "reserved R-000001 at seattle-north" || results[1] != "reservation recorded already" {
			t.Errorf("results = %q", results)
		}
		if e.shop.Stock(heater) != 4 || len(e.shop.Reservations()) != 1 {
			t.Errorf("shop: stock %d, %d reservations, want 4 and 1", e.shop.Stock(heater), len(e.shop.Reservations()))
		}
		r := e.shop.Reservations()[0]
		if r.Key != j.Key || r.Device != dev || r.CustomerRef == "" || strings.Contains(r.CustomerRef, "@") {
			t.Errorf("shop reservation = %+v", r)
		}
		got, err := e.store.ListReservations(t.Context(), cloudstore.ReservationFilter{AlertID: a.ID})
		if err != nil || len(got) != 1 || got[0].State != cloudstore.ReservationReserved || got[0].Reference != "R-000001" || got[0].Shop != "seattle-north" {
			t.Errorf("reservations = %+v, %v, want one reserved R-000001", got, err)
		}
	})
}

// TestReservePart_OutOfStockRecorded: the shop has none: out_of_stock is recorded, done.
func TestReservePart_OutOfStockRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	dev := deviceID(30)
	e.sale(dev, e.now.AddDate(0, -6, 0), "seattle-north")
	a, jobs := e.open(e.transition("drying-too-hot", dev, t0))
	res, err := e.run(job(t, jobs, outbox.KindReservePart))
	if err != nil || !strings.HasPrefix(res, cloudstore.ReservationOutOfStock) {
		t.Errorf("reserve-part = %q, %v, want out of stock", res, err)
	}
	got, _ := e.store.ListReservations(t.Context(), cloudstore.ReservationFilter{AlertID: a.ID})
	if len(got) != 1 || got[0].State != cloudstore.ReservationOutOfStock {
		t.Errorf("reservations = %+v, want one out_of_stock", got)
	}
}

// TestReservePart_UnknownShop: a sale naming a shop the shops file lacks is no_shop.
func TestReservePart_UnknownShop(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 5)
	dev := deviceID(31)
	e.sale(dev, e.now.AddDate(0, -6, 0), "portland-east")
	a, jobs := e.open(e.transition("drying-too-hot", dev, t0))
	if res, err := e.run(job(t, jobs, outbox.KindReservePart)); err != nil || !strings.HasPrefix(res, cloudstore.ReservationNoShop) {
		t.Errorf("reserve-part = %q, %v, want no_shop", res, err)
	}
	got, _ := e.store.ListReservations(t.Context(), cloudstore.ReservationFilter{AlertID: a.ID})
	if len(got) != 1 || got[0].State != cloudstore.ReservationNoShop || e.shopHits.Load() != 0 {
		t.Errorf("reservations = %+v, shop hits %d", got, e.shopHits.Load())
	}
}

// TestNotify_MailsOnlyVerifiedOwner: nobody, or an unverified address, gets no mail; a
// verified owner gets one, with the same Message-ID when the row runs again.
func TestNotify_MailsOnlyVerifiedOwner(t *testing.T) {
	t.Parallel()
	onBothStores(t, 5, func(t *testing.T, e *env) {
		unclaimed, unverified, verified := deviceID(40), deviceID(41), deviceID(42)
		e.owner(unverified, "stranger@example.com", false)
		o := e.owner(verified, "ada@example.com", true)
		for _, dev := range []string{unclaimed, unverified} {
			_, jobs := e.open(e.transition("heater-drying-anomaly", dev, t0))
			if res, err := e.run(job(t, jobs, outbox.KindNotify)); err != nil || res != actions.ResultNoVerifiedOwner {
				t.Errorf("notify of %s = %q, %v, want %q", dev[:4], res, err, actions.ResultNoVerifiedOwner)
			}
		}
		if n := len(e.mailer.mails()); n != 0 {
			t.Fatalf("mails to unclaimed or unverified = %d, want 0", n)
		}
		_, jobs := e.open(e.transition("heater-drying-anomaly", verified, t0))
		j := job(t, jobs, outbox.KindNotify)
		for range 2 {
			if _, err := e.run(j); err != nil {
				t.Fatal(err)
			}
		}
		ms := e.mailer.mails()
		if len(ms) != 2 || ms[0].To != o.Email || ms[0].MessageID != outbox.MessageID(j.Key, "") || ms[1].MessageID != ms[0].MessageID {
			t.Fatalf("mails = %+v", ms)
		}
		if !strings.Contains(ms[0].Text, portal+"appliances/"+verified) || !strings.Contains(ms[0].Text, "46.2 °C is unusual") ||
			strings.ContainsAny(ms[0].Subject, "\r\n") {
			t.Errorf("mail:\nSubject: %s\n\n%s", ms[0].Subject, ms[0].Text)
		}
	})
}

// TestServiceRequest_OncePerAlert: run twice, one request, the rule's source and owner.
func TestServiceRequest_OncePerAlert(t *testing.T) {
	t.Parallel()
	onBothStores(t, 5, func(t *testing.T, e *env) {
		dev := deviceID(50)
		o := e.owner(dev, "ada@example.com", true)
		a, jobs := e.open(e.transition("heater-drying-anomaly", dev, t0))
		j := job(t, jobs, outbox.KindServiceRequest)
		for i, want := range []string{"service request ", "service request exists already"} {
			if res, err := e.run(j); err != nil || !strings.HasPrefix(res, want) {
				t.Errorf("run %d = %q, %v, want %q", i, res, err, want)
			}
		}
		got, err := e.store.ListServiceRequests(t.Context(), cloudstore.ServiceRequestFilter{AlertID: a.ID})
		if err != nil || len(got) != 1 || got[0].Source != cloudstore.SourceRule || got[0].OwnerID != o.ID || !strings.HasPrefix(got[0].Description, "The drying heater may be failing") {
			t.Errorf("service requests = %+v, %v", got, err)
		}
	})
}

// TestPrompt_OncePerRefill: one low-rinse-agent episode prompts once however often its
// row runs; the next episode (after a refill closed the first) prompts again.
func TestPrompt_OncePerRefill(t *testing.T) {
	t.Parallel()
	onBothStores(t, 5, func(t *testing.T, e *env) {
		dev := deviceID(60)
		e.owner(dev, "ada@example.com", true)
		mails := func() int {
			return e.count(`SELECT COUNT(*) FROM outbox WHERE kind = 'email' AND key LIKE 'prompt-mail:%'`)
		}
		a1, jobs := e.open(e.transition("rinse-agent-low", dev, t0))
		j := job(t, jobs, outbox.KindPrompt)
		for range 2 {
			if _, err := e.run(j); err != nil {
				t.Fatal(err)
			}
		}
		ps, _ := e.store.ListPrompts(t.Context(), cloudstore.PromptFilter{Device: dev})
		if len(ps) != 1 || mails() != 1 || ps[0].BuyURL != "https://shop.example.com/dw100/rinse-agent" {
			t.Fatalf("one episode run twice: prompts %+v, mails %d, want 1 and 1", ps, mails())
		}
		if _, err := e.store.ClearAlert(t.Context(), a1.ID, t0.Add(time.Hour)); err != nil { // the refill
			t.Fatal(err)
		}
		_, jobs = e.open(e.transition("rinse-agent-low", dev, t0.Add(48*time.Hour)))
		if _, err := e.run(job(t, jobs, outbox.KindPrompt)); err != nil {
			t.Fatal(err)
		}
		ps, _ = e.store.ListPrompts(t.Context(), cloudstore.PromptFilter{Device: dev})
		if len(ps) != 2 || mails() != 2 {
			t.Errorf("two episodes: prompts %d, mails %d, want 2 and 2", len(ps), mails())
		}
		var p outbox.EmailPayload
		var raw string
		if err := e.db.QueryRowContext(t.Context(), `SELECT payload FROM outbox WHERE kind = 'email' ORDER BY id LIMIT 1`).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(raw), &p); err != nil || p.To != "ada@example.com" || !strings.Contains(p.Text, "https://shop.example.com/dw100/rinse-agent") {
			t.Errorf("prompt mail = %+v, %v", p, err)
		}
	})
}

// TestPrompt_NoMailToUnverifiedOwner: the prompt is stored (the portal shows it), the
// mail is not enqueued.
func TestPrompt_NoMailToUnverifiedOwner(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 5)
	dev := deviceID(61)
	e.owner(dev, "stranger@example.com", false)
	_, jobs := e.open(e.transition("rinse-agent-low", dev, t0))
	res, err := e.run(job(t, jobs, outbox.KindPrompt))
	if err != nil || !strings.HasSuffix(res, actions.ResultNoVerifiedOwner) {
		t.Errorf("prompt = %q, %v", res, err)
	}
	if n := e.count(`SELECT COUNT(*) FROM outbox WHERE kind = 'email'`); n != 0 {
		t.Errorf("mails enqueued = %d, want 0", n)
	}
}

// TestHandlers_MalformedPayloadIsPermanent: a row that cannot decode is not retried.
func TestHandlers_MalformedPayloadIsPermanent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 5)
	for kind := range e.handlers {
		_, err := e.run(outbox.Job{Kind: kind, Key: "k", AlertID: 1, Payload: []byte(`{"device":"x","extra":1}`)})
		if !outbox.IsPermanent(err) {
			t.Errorf("%s with a malformed payload = %v, want a permanent error", kind, err)
		}
	}
}

// TestHandlers_RefuseMissingDeps: no default stands in for a missing dependency.
func TestHandlers_RefuseMissingDeps(t *testing.T) {
	t.Parallel()
	_, err := actions.Handlers(actions.Deps{PortalURL: "javascript:alert(1)"})
	for _, want := range []string{"store required", "mailer required", "settings, now and logger required", "portal url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Handlers(Deps{}) = %v, want %q", err, want)
		}
	}
}
