package portal

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/owners"
)

// maxResultBytes bounds the diagnostics result shown per alert.
const maxResultBytes = 600

type listView struct {
	Appliances []listItem
}

type listItem struct {
	cloudstore.Appliance
	Prompts int
}

func (p *Portal) appliances(q *req) error {
	ctx := q.r.Context()
	as, err := p.cfg.Store.Appliances(ctx, q.owner.ID)
	if err != nil {
		return err
	}
	v := listView{}
	for _, a := range as {
		ps, err := p.cfg.Store.ListPrompts(ctx, cloudstore.PromptFilter{Device: a.Device, Open: true, Since: a.Since, Limit: 10})
		if err != nil {
			return err
		}
		v.Appliances = append(v.Appliances, listItem{Appliance: a, Prompts: len(ps)})
	}
	return p.page(q, http.StatusOK, "appliances.html", view{Title: "Your appliances", Data: v})
}

type claimView struct{ Code string }

func (p *Portal) claimForm(q *req) error {
	return p.page(q, http.StatusOK, "claim.html", view{Title: "Add an appliance", Data: claimView{}})
}

func (p *Portal) claim(q *req) error {
	code := q.r.PostForm.Get("code")
	a, err := p.cfg.Owners.Claim(q.r.Context(), q.owner.ID, code, q.r.RemoteAddr)
	if err != nil {
		// The code is not shown again (a mistyped code is easy to retype; a right one
		// spent is no longer worth anything).
		return p.refuse(q, "claim.html", view{Title: "Add an appliance", Data: claimView{}}, err)
	}
	http.Redirect(q.w, q.r, "/portal/appliances/"+a.Device+"?done=claimed", http.StatusSeeOther)
	return nil
}

// own returns q's owner's appliance of the route's {device}; anyone else's is 404, the
// same as a missing one (rendered here; ok false).
func (p *Portal) own(q *req) (cloudstore.Appliance, bool, error) {
	a, err := p.cfg.Owners.Appliance(q.r.Context(), q.owner.ID, q.r.PathValue("device"))
	if errors.Is(err, owners.ErrNotFound) {
		p.fail(q.w, q.r, http.StatusNotFound, "There is no such page.")
		return a, false, nil
	}
	return a, err == nil, err
}

type warrantyView struct {
	Known  bool // a sale and a warranty period are recorded
	SoldAt time.Time
	Ends   time.Time
	Under  bool
}

type alertView struct {
	cloudstore.Alert
	Result       string
	Requests     []cloudstore.ServiceRequest
	Reservations []cloudstore.Reservation
}

type shopOption struct {
	Shop
	Selected bool
}

type serviceForm struct{ Description, Preferred string }

type applianceView struct {
	A            cloudstore.Appliance
	Nickname     string
	Shops        []shopOption
	ShopName     string
	Warranty     warrantyView
	Usage        usageView
	Alerts       []alertView
	Requests     []cloudstore.ServiceRequest
	Reservations []cloudstore.Reservation
	Prompts      []cloudstore.Prompt
	Service      serviceForm
}

var notices = map[string]string{
	"claimed":   "The appliance is yours now.",
	"saved":     "Saved.",
	"requested": "Your service request was sent. The repair shop will contact you.",
	"dismissed": "The reminder was dismissed.",
}

func (p *Portal) appliance(q *req) error {
	a, ok, err := p.own(q)
	if !ok {
		return err
	}
	v, err := p.applianceView(q, a)
	if err != nil {
		return err
	}
	return p.page(q, http.StatusOK, "appliance.html", view{Title: a.Nickname, Notice: notices[q.r.URL.Query().Get("done")], Data: v})
}

// applianceView gathers what the appliance page shows, all of it since the owner's claim.
func (p *Portal) applianceView(q *req, a cloudstore.Appliance) (applianceView, error) {
	ctx, now := q.r.Context(), p.cfg.Now()
	v := applianceView{A: a, Nickname: a.Nickname}
	var shops []Shop
	if p.cfg.Shops != nil {
		shops = p.cfg.Shops()
	}
	for _, s := range shops {
		v.Shops = append(v.Shops, shopOption{Shop: s, Selected: s.ID == a.Shop})
		if s.ID == a.Shop {
			v.ShopName = s.Name
		}
	}
	if sale, err := p.cfg.Store.GetSale(ctx, a.Device); err == nil {
		v.Warranty.SoldAt = sale.SoldAt
		if p.cfg.Warranty != nil {
			if d := p.cfg.Warranty(a.Product); d > 0 {
				v.Warranty.Known, v.Warranty.Ends = true, sale.SoldAt.Add(d)
				v.Warranty.Under = now.Before(v.Warranty.Ends)
			}
		}
	} else if !errors.Is(err, cloudstore.ErrNotFound) {
		return v, err
	}
	var err error
	if v.Usage, err = p.usage(ctx, a, now); err != nil {
		return v, err
	}
	if v.Requests, err = p.cfg.Store.ListServiceRequests(ctx, cloudstore.ServiceRequestFilter{Device: a.Device, Since: a.Since, Limit: 50}); err != nil {
		return v, err
	}
	if v.Reservations, err = p.cfg.Store.ListReservations(ctx, cloudstore.ReservationFilter{Device: a.Device, Since: a.Since, Limit: 50}); err != nil {
		return v, err
	}
	if v.Prompts, err = p.cfg.Store.ListPrompts(ctx, cloudstore.PromptFilter{Device: a.Device, Open: true, Since: a.Since, Limit: 10}); err != nil {
		return v, err
	}
	alerts, _, err := p.cfg.Store.ListAlerts(ctx, cloudstore.AlertFilter{Device: a.Device, Limit: 50})
	if err != nil {
		return v, err
	}
	for _, al := range alerts {
		if al.OpenedAt.Before(a.Since) {
			continue // a previous owner's
		}
		av := alertView{Alert: al, Result: resultText(al.DiagnosticResult)}
		for _, r := range v.Requests {
			if r.AlertID == al.ID {
				av.Requests = append(av.Requests, r)
			}
		}
		for _, r := range v.Reservations {
			if r.AlertID == al.ID {
				av.Reservations = append(av.Reservations, r)
			}
		}
		v.Alerts = append(v.Alerts, av)
	}
	return v, nil
}

// resultText is a diagnostics result as compact text, bounded: written by the device, it
// is shown as text (escaped by the template), never as markup.
func resultText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var v any
	s := string(raw)
	if json.Unmarshal(raw, &v) == nil {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // the template escapes; \u003c would only confuse an owner
		if enc.Encode(v) == nil {
			s = strings.TrimSpace(b.String())
		}
	}
	if len(s) > maxResultBytes {
		s = strings.ToValidUTF8(s[:maxResultBytes], "") + "…"
	}
	return s
}

// again re-renders the appliance page with a refusal of one of its forms.
func (p *Portal) again(q *req, a cloudstore.Appliance, err error, edit func(*applianceView)) error {
	status, msg, retry, ok := refusal(err)
	if !ok {
		return err
	}
	v, verr := p.applianceView(q, a)
	if verr != nil {
		return verr
	}
	edit(&v)
	return p.page(q, status, "appliance.html", view{Title: a.Nickname, Error: msg, RetryAfter: retry, Data: v})
}

func (p *Portal) settings(q *req) error {
	a, ok, err := p.own(q)
	if !ok {
		return err
	}
	nickname, shop := strings.TrimSpace(q.r.PostForm.Get("nickname")), q.r.PostForm.Get("shop")
	edit := func(v *applianceView) { v.Nickname = nickname }
	if shop != "" && !p.knownShop(shop) {
		return p.again(q, a, errors.Join(owners.ErrInvalid, errors.New("shop: choose one of the listed repair shops")), edit)
	}
	if err := p.cfg.Store.UpdateAppliance(q.r.Context(), q.owner.ID, a.Device, nickname, shop); err != nil {
		return p.again(q, a, err, edit)
	}
	http.Redirect(q.w, q.r, "/portal/appliances/"+a.Device+"?done=saved", http.StatusSeeOther)
	return nil
}

func (p *Portal) knownShop(id string) bool {
	if p.cfg.Shops == nil {
		return false
	}
	for _, s := range p.cfg.Shops() {
		if s.ID == id {
			return true
		}
	}
	return false
}

// preferredLayout is the form's datetime-local value; times are UTC (the page says so).
const preferredLayout = "2006-01-02T15:04"

func (p *Portal) requestService(q *req) error {
	a, ok, err := p.own(q)
	if !ok {
		return err
	}
	form := serviceForm{Description: strings.TrimSpace(q.r.PostForm.Get("description")), Preferred: q.r.PostForm.Get("preferred")}
	edit := func(v *applianceView) { v.Service = form }
	now := p.cfg.Now()
	var preferred time.Time
	if form.Preferred != "" {
		t, perr := time.Parse(preferredLayout, form.Preferred)
		switch {
		case perr != nil || len(form.Preferred) > len(preferredLayout)+3:
			return p.again(q, a, errors.Join(owners.ErrInvalid, errors.New("preferred: a date and time like 2026-07-01T09:30")), edit)
		case !t.After(now):
			return p.again(q, a, errors.Join(owners.ErrInvalid, errors.New("preferred: must be in the future")), edit)
		}
		preferred = t
	}
	_, err = p.cfg.Store.CreateServiceRequest(q.r.Context(), cloudstore.NewServiceRequest{Device: a.Device, OwnerID: q.owner.ID,
		Source: cloudstore.SourceOwner, Description: form.Description, Preferred: preferred, CreatedAt: now})
	if err != nil {
		return p.again(q, a, err, edit)
	}
	p.log.InfoContext(q.r.Context(), "owner requested service", "owner_id", q.owner.ID, "device_id", a.Device)
	http.Redirect(q.w, q.r, "/portal/appliances/"+a.Device+"?done=requested#requests", http.StatusSeeOther)
	return nil
}

func (p *Portal) dismissPrompt(q *req) error {
	a, ok, err := p.own(q)
	if !ok {
		return err
	}
	id, err := strconv.ParseInt(q.r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		p.fail(q.w, q.r, http.StatusNotFound, "There is no such page.")
		return nil
	}
	// Only a prompt of this owner's time with the appliance.
	ps, err := p.cfg.Store.ListPrompts(q.r.Context(), cloudstore.PromptFilter{Device: a.Device, Open: true, Since: a.Since, Limit: 100})
	if err != nil {
		return err
	}
	found := false
	for _, pr := range ps {
		found = found || pr.ID == id
	}
	if !found {
		p.fail(q.w, q.r, http.StatusNotFound, "There is no such reminder.")
		return nil
	}
	if err := p.cfg.Store.DismissPrompt(q.r.Context(), a.Device, id, p.cfg.Now()); err != nil && !errors.Is(err, cloudstore.ErrNotFound) {
		return err
	}
	http.Redirect(q.w, q.r, "/portal/appliances/"+url.PathEscape(a.Device)+"?done=dismissed", http.StatusSeeOther)
	return nil
}

type handoverView struct {
	A    cloudstore.Appliance
	Code string
}

func (p *Portal) handover(q *req) error {
	a, ok, err := p.own(q)
	if !ok {
		return err
	}
	code, err := p.cfg.Owners.Handover(q.r.Context(), q.owner.ID, a.Device)
	if err != nil {
		return err
	}
	return p.page(q, http.StatusOK, "handover.html", view{Title: "Hand over " + a.Nickname, Data: handoverView{A: a, Code: code}})
}
