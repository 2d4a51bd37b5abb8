package support

import (
	"bytes"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/diag"
	"github.com/moat-iot/moat/internal/telemetry"
	"github.com/moat-iot/moat/internal/webui"
)

// pageSize is how many rows a list page shows.
const pageSize = 100

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"day": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02")
	},
	"json": func(b json.RawMessage) string {
		if len(b) == 0 {
			return ""
		}
		var out bytes.Buffer
		if json.Indent(&out, b, "", "  ") != nil {
			return string(b)
		}
		return out.String()
	},
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12] + "…"
		}
		return s
	},
	// table is what the requests-table partial gets: the page's view, its rows, and
	// where a change returns to.
	"table": func(v view, rows []cloudstore.ServiceRequest, back string) map[string]any {
		return map[string]any{"CanOperate": v.CanOperate, "CSRF": v.CSRF, "States": editableStates, "Rows": rows, "Back": back}
	},
	"pending": func(state string) bool {
		return state == cloudstore.DiagnosticPending || state == cloudstore.DiagnosticSent
	},
}

// view is what every page template gets.
type view struct {
	Title      string
	User       string
	Role       string
	CanOperate bool
	CSRF       string
	Data       any
}

func (s *Support) render(w http.ResponseWriter, r *http.Request, status int, name string, ss *session, csrfID string, data any) {
	t := s.pages[name]
	v := view{Title: name, Data: data}
	if ss != nil {
		v.User, v.Role, v.CanOperate, csrfID = ss.p.UserName, string(ss.p.Role), ss.p.CanOperate(), ss.id
	}
	if csrfID != "" {
		v.CSRF = webui.CSRFToken(csrfID)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		s.log.ErrorContext(r.Context(), "support page not rendered", "page", name, "error", err)
		http.Error(w, "the page cannot be shown", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail shows an error page; err, when set, is logged, never shown.
func (s *Support) fail(w http.ResponseWriter, r *http.Request, err error, status int, msg string) {
	if err != nil {
		s.log.WarnContext(r.Context(), "support request failed", "path", r.URL.Path, "status", status, "error", err)
	}
	s.render(w, r, status, "error", nil, "", map[string]any{"Status": status, "Message": msg})
}

func (s *Support) shop(id string) string {
	if id == "" {
		return ""
	}
	if s.cfg.Shops != nil {
		if n := s.cfg.Shops(id); n != "" {
			return n + " (" + id + ")"
		}
	}
	return id
}

// --- alerts

func (s *Support) alerts(w http.ResponseWriter, r *http.Request, ss *session) {
	q := r.URL.Query()
	state, device := q.Get("state"), q.Get("device")
	if state != "" && state != cloudstore.AlertOpen && state != cloudstore.AlertCleared {
		s.fail(w, r, nil, http.StatusBadRequest, "state must be open or cleared")
		return
	}
	if device != "" && !telemetry.ValidDeviceID(device) {
		s.fail(w, r, nil, http.StatusBadRequest, "device must be 64 lower-case hex digits")
		return
	}
	var all []cloudstore.Alert
	// Open alerts first, then cleared ones, each newest first.
	for _, st := range []string{cloudstore.AlertOpen, cloudstore.AlertCleared} {
		if state != "" && st != state {
			continue
		}
		as, _, err := s.cfg.Store.ListAlerts(r.Context(), cloudstore.AlertFilter{State: st, Device: device, Limit: pageSize})
		if err != nil {
			s.fail(w, r, err, http.StatusInternalServerError, "alerts cannot be read")
			return
		}
		all = append(all, as...)
	}
	s.render(w, r, http.StatusOK, "alerts", ss, "", map[string]any{"Alerts": all, "State": state, "Device": device})
}

func (s *Support) alert(w http.ResponseWriter, r *http.Request, ss *session) {
	id, err := strconv.ParseInt(r.PathValue("alert"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(w, r, nil, http.StatusNotFound, "no such alert")
		return
	}
	ctx := r.Context()
	a, err := s.cfg.Store.GetAlert(ctx, id)
	if errors.Is(err, cloudstore.ErrNotFound) {
		s.fail(w, r, nil, http.StatusNotFound, "no such alert")
		return
	}
	if err != nil {
		s.fail(w, r, err, http.StatusInternalServerError, "the alert cannot be read")
		return
	}
	ds, err1 := s.cfg.Store.ListDiagnostics(ctx, cloudstore.DiagnosticFilter{AlertID: id, Limit: 20})
	rs, err2 := s.cfg.Store.ListServiceRequests(ctx, cloudstore.ServiceRequestFilter{AlertID: id, Limit: 10})
	ps, err3 := s.cfg.Store.ListReservations(ctx, cloudstore.ReservationFilter{AlertID: id, Limit: 10})
	pr, err4 := s.cfg.Store.ListPrompts(ctx, cloudstore.PromptFilter{Device: a.Device, Since: a.OpenedAt.Add(-time.Minute), Limit: 100})
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		s.fail(w, r, err, http.StatusInternalServerError, "the alert's actions cannot be read")
		return
	}
	var prompts []cloudstore.Prompt
	for _, p := range pr {
		if p.AlertID == id {
			prompts = append(prompts, p)
		}
	}
	s.render(w, r, http.StatusOK, "alert", ss, "", map[string]any{"Alert": a, "Diagnostics": ds, "Requests": rs,
		"Reservations": s.reservationRows(ps), "Prompts": prompts, "States": editableStates})
}

// --- service requests

var editableStates = []string{cloudstore.RequestScheduled, cloudstore.RequestDone, cloudstore.RequestCancelled}

func (s *Support) requests(w http.ResponseWriter, r *http.Request, ss *session) {
	state := r.URL.Query().Get("state")
	switch state {
	case "", cloudstore.RequestOpen, cloudstore.RequestScheduled, cloudstore.RequestDone, cloudstore.RequestCancelled:
	default:
		s.fail(w, r, nil, http.StatusBadRequest, "state must be open, scheduled, done or cancelled")
		return
	}
	rs, err := s.cfg.Store.ListServiceRequests(r.Context(), cloudstore.ServiceRequestFilter{State: state, Limit: pageSize})
	if err != nil {
		s.fail(w, r, err, http.StatusInternalServerError, "service requests cannot be read")
		return
	}
	s.render(w, r, http.StatusOK, "requests", ss, "", map[string]any{"Requests": rs, "State": state, "States": editableStates,
		"Filters": []string{cloudstore.RequestOpen, cloudstore.RequestScheduled, cloudstore.RequestDone, cloudstore.RequestCancelled}})
}

func (s *Support) updateRequest(w http.ResponseWriter, r *http.Request, ss *session) {
	id, err := strconv.ParseInt(r.PathValue("request"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(w, r, nil, http.StatusNotFound, "no such service request")
		return
	}
	state, note := r.PostForm.Get("state"), strings.TrimSpace(r.PostForm.Get("note"))
	if state != cloudstore.RequestScheduled && state != cloudstore.RequestDone && state != cloudstore.RequestCancelled {
		s.fail(w, r, nil, http.StatusBadRequest, "state must be scheduled, done or cancelled")
		return
	}
	sr, err := s.cfg.Store.UpdateServiceRequest(r.Context(), id, state, note, s.cfg.Now())
	switch {
	case errors.Is(err, cloudstore.ErrNotFound):
		s.fail(w, r, nil, http.StatusNotFound, "no such service request")
		return
	case errors.Is(err, cloudstore.ErrConflict):
		s.fail(w, r, nil, http.StatusConflict, "the service request is finished already (done or cancelled)")
		return
	case errors.Is(err, cloudstore.ErrInvalid):
		s.fail(w, r, nil, http.StatusBadRequest, strings.TrimPrefix(err.Error(), cloudstore.ErrInvalid.Error()+": "))
		return
	case err != nil:
		s.fail(w, r, err, http.StatusInternalServerError, "the service request cannot be changed")
		return
	}
	s.log.InfoContext(r.Context(), "service request changed", "request", id, "state", state, "user", ss.p.UserName)
	back := "/support/requests"
	if r.PostForm.Get("back") == "device" {
		back = "/support/devices/" + sr.Device
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// --- reservations

type reservationRow struct {
	cloudstore.Reservation
	ShopName string
}

func (s *Support) reservationRows(rs []cloudstore.Reservation) []reservationRow {
	out := make([]reservationRow, 0, len(rs))
	for _, x := range rs {
		out = append(out, reservationRow{Reservation: x, ShopName: s.shop(x.Shop)})
	}
	return out
}

func (s *Support) reservations(w http.ResponseWriter, r *http.Request, ss *session) {
	rs, err := s.cfg.Store.ListReservations(r.Context(), cloudstore.ReservationFilter{Limit: pageSize})
	if err != nil {
		s.fail(w, r, err, http.StatusInternalServerError, "reservations cannot be read")
		return
	}
	s.render(w, r, http.StatusOK, "reservations", ss, "", map[string]any{"Reservations": s.reservationRows(rs)})
}

// --- devices

func (s *Support) device(w http.ResponseWriter, r *http.Request, ss *session) {
	dev := r.PathValue("device")
	if !telemetry.ValidDeviceID(dev) {
		s.fail(w, r, nil, http.StatusNotFound, "no such device")
		return
	}
	ctx := r.Context()
	d, err := s.cfg.Store.GetDevice(ctx, dev)
	seen := err == nil
	if err != nil && !errors.Is(err, cloudstore.ErrNotFound) {
		s.fail(w, r, err, http.StatusInternalServerError, "the device cannot be read")
		return
	}
	info, err := s.cfg.Store.ApplianceInfo(ctx, dev)
	if err != nil {
		s.fail(w, r, err, http.StatusInternalServerError, "the device cannot be read")
		return
	}
	if !seen && info.OwnerID == 0 && info.SoldAt.IsZero() {
		s.fail(w, r, nil, http.StatusNotFound, "no such device")
		return
	}
	as, _, err1 := s.cfg.Store.ListAlerts(ctx, cloudstore.AlertFilter{Device: dev, Limit: 20})
	ds, err2 := s.cfg.Store.ListDiagnostics(ctx, cloudstore.DiagnosticFilter{Device: dev, Limit: 20})
	rs, err3 := s.cfg.Store.ListServiceRequests(ctx, cloudstore.ServiceRequestFilter{Device: dev, Limit: 20})
	ps, err4 := s.cfg.Store.ListReservations(ctx, cloudstore.ReservationFilter{Device: dev, Limit: 20})
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		s.fail(w, r, err, http.StatusInternalServerError, "the device's history cannot be read")
		return
	}
	// The warranty runs from the sale for the product's period (its rule file's warranty).
	var warrantyUntil time.Time
	if s.cfg.Warranty != nil && !info.SoldAt.IsZero() {
		if p := s.cfg.Warranty(info.Product); p > 0 {
			warrantyUntil = info.SoldAt.Add(p)
		}
	}
	s.render(w, r, http.StatusOK, "device", ss, "", map[string]any{"ID": dev, "Seen": seen, "Device": d, "Info": info,
		"WarrantyUntil": warrantyUntil, "UnderWarranty": s.cfg.Now().Before(warrantyUntil),
		"Shop": s.shop(info.Shop), "SaleShop": s.shop(info.SaleShop), "Alerts": as, "Diagnostics": ds, "Requests": rs,
		"Reservations": s.reservationRows(ps), "States": editableStates, "Ran": r.URL.Query().Get("ran")})
}

func (s *Support) runDiagnostics(w http.ResponseWriter, r *http.Request, ss *session) {
	dev := r.PathValue("device")
	if !telemetry.ValidDeviceID(dev) {
		s.fail(w, r, nil, http.StatusNotFound, "no such device")
		return
	}
	ctx := r.Context()
	if _, err := s.cfg.Store.GetDevice(ctx, dev); err != nil {
		s.fail(w, r, nil, http.StatusNotFound, "the cloud has never seen this device; nothing was sent")
		return
	}
	command := strings.TrimSpace(r.PostForm.Get("command"))
	if !telemetry.ValidCommand(command) {
		s.fail(w, r, nil, http.StatusBadRequest, "command must be 1 to 64 letters, digits, '_', '.', '/' or '-'")
		return
	}
	var args json.RawMessage
	if a := strings.TrimSpace(r.PostForm.Get("args")); a != "" {
		if len(a) > telemetry.MaxArgsBytes || !json.Valid([]byte(a)) {
			s.fail(w, r, nil, http.StatusBadRequest, "arguments must be JSON of at most "+strconv.Itoa(telemetry.MaxArgsBytes)+" bytes")
			return
		}
		args = json.RawMessage(a)
	}
	d, err := s.cfg.Diag.Run(ctx, diag.Request{Device: dev, Command: command, Args: args, RequestedBy: "support:" + requester(ss)})
	if errors.Is(err, cloudstore.ErrInvalid) {
		s.fail(w, r, nil, http.StatusBadRequest, strings.TrimPrefix(err.Error(), cloudstore.ErrInvalid.Error()+": "))
		return
	}
	if err != nil {
		s.fail(w, r, err, http.StatusInternalServerError, "the diagnostics request cannot be made")
		return
	}
	s.log.InfoContext(ctx, "diagnostics requested", "diagnostic", d.ID, "device", dev, "command", command, "user", ss.p.UserName)
	// Hold the page a few seconds for the answer; a slower one shows pending, and a reload
	// shows it when it comes.
	if _, err := s.cfg.Diag.Wait(ctx, d.ID, DiagnosticsWait); err != nil && !errors.Is(err, diag.ErrBusy) {
		s.log.WarnContext(ctx, "diagnostics wait", "diagnostic", d.ID, "error", err)
	}
	http.Redirect(w, r, "/support/devices/"+dev+"?ran="+url.QueryEscape(d.ID), http.StatusSeeOther) //nolint:gosec // G710: dev is 64 hex digits (checked above), a same-site path
}

// requester names the member within the store's alphabet for requested_by.
func requester(ss *session) string {
	var b strings.Builder
	for _, r := range ss.p.UserName {
		if b.Len() >= 100 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("_.:@+-", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "user"
	}
	return b.String()
}
