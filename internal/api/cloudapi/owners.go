package cloudapi

import (
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/cloud/claimcode"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/telemetry"
)

// The staff routes of the owners' side (issue 14): claim codes made at manufacture, sale
// records, service requests and part reservations. Reading needs a member of the tenant
// (TestAPI_OtherTenantSeesNothingOfOwners); making claim codes, recording sales and
// changing service requests need Contributor or Administrator.

// MaxClaimCodeDevices bounds one claim-codes request.
const MaxClaimCodeDevices = 1000

// claimCodesBody bounds a claim-codes body: MaxClaimCodeDevices IDs of 64 hex digits,
// quoted and separated, and the product.
const claimCodesBody = MaxClaimCodeDevices*(64+3) + 1024

var (
	productRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	shopRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
)

// serviceRequestUpdate is the body of updateServiceRequest.
type serviceRequestUpdate client.ServiceRequestUpdate

func (u serviceRequestUpdate) Validate() error {
	var v problem.Validation
	switch u.State {
	case cloudstore.RequestOpen, cloudstore.RequestScheduled, cloudstore.RequestDone, cloudstore.RequestCancelled:
	default:
		v.Add("state", "invalid_state", "state must be open, scheduled, done or cancelled")
	}
	if err := cloudstore.CheckText("note", u.Note, cloudstore.MaxNoteBytes, true); err != nil {
		v.Add("note", "invalid_note", "note must be text of at most %d bytes without control characters", cloudstore.MaxNoteBytes)
	}
	return v.Err()
}

// claimCodesCreate is the body of createClaimCodes.
type claimCodesCreate client.ClaimCodesCreate

func (c claimCodesCreate) Validate() error {
	var v problem.Validation
	if !productRE.MatchString(c.Product) {
		v.Add("product", "invalid_product", "product must be 1 to 64 letters, digits, '_', '.' or '-'")
	}
	switch n := len(c.Devices); {
	case n == 0:
		v.Add("devices", "devices_required", "devices must name at least one device")
	case n > MaxClaimCodeDevices:
		v.Add("devices", "too_many_devices", "at most %d devices per request", MaxClaimCodeDevices)
	default:
		seen := make(map[string]bool, n)
		for i, d := range c.Devices {
			if !telemetry.ValidDeviceID(d) {
				v.Add("devices["+strconv.Itoa(i)+"]", "invalid_device", "a device ID is 64 lower-case hex digits")
				break
			}
			if seen[d] {
				v.Add("devices["+strconv.Itoa(i)+"]", "duplicate_device", "device %.16s… is named twice", d)
				break
			}
			seen[d] = true
		}
	}
	return v.Err()
}

// saleRecord is the body of recordSale.
type saleRecord client.SaleRecord

// parseSoldAt reads an RFC 3339 date (midnight UTC) or time.
func parseSoldAt(s string) (time.Time, bool) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, true
	}
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

func (s saleRecord) Validate() error {
	var v problem.Validation
	if !telemetry.ValidDeviceID(s.Device) {
		v.Add("device", "invalid_device", "device must be 64 lower-case hex digits")
	}
	if !productRE.MatchString(s.Product) {
		v.Add("product", "invalid_product", "product must be 1 to 64 letters, digits, '_', '.' or '-'")
	}
	if t, ok := parseSoldAt(s.SoldAt); !ok || t.Year() < 2000 {
		v.Add("sold_at", "invalid_sold_at", "sold_at must be an RFC 3339 date (2026-05-01) or time after 2000")
	}
	if !shopRE.MatchString(s.Shop) {
		v.Add("shop", "invalid_shop", "shop must be 1 to 64 lower-case letters, digits or '-'")
	}
	return v.Err()
}

func (a *API) listServiceRequests(c *call) (any, int, error) {
	qv := c.r.URL.Query()
	f := cloudstore.ServiceRequestFilter{State: qv.Get("state"), Device: qv.Get("device")}
	switch f.State {
	case "", cloudstore.RequestOpen, cloudstore.RequestScheduled, cloudstore.RequestDone, cloudstore.RequestCancelled:
	default:
		return nil, 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_state", Field: "state", Detail: "state must be open, scheduled, done or cancelled"}
	}
	if f.Device != "" && !telemetry.ValidDeviceID(f.Device) {
		return nil, 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_device", Field: "device", Detail: "device must be 64 lower-case hex digits"}
	}
	var err error
	if f.Limit, err = limitParam(c); err != nil {
		return nil, 0, err
	}
	if _, err := readPageToken(c, &f.BeforeID); err != nil {
		return nil, 0, err
	}
	rs, err := a.cfg.Store.ListServiceRequests(c.ctx, f)
	if err != nil {
		return nil, 0, err
	}
	out := client.Page[client.ServiceRequest]{Items: make([]client.ServiceRequest, 0, len(rs))}
	for _, r := range rs {
		out.Items = append(out.Items, serviceRequest(r))
	}
	if len(rs) == f.Limit {
		out.NextPageToken = pageToken(rs[len(rs)-1].ID)
	}
	return out, http.StatusOK, nil
}

func (a *API) updateServiceRequest(c *call) (any, int, error) {
	id, err := strconv.ParseInt(c.r.PathValue("request"), 10, 64)
	if err != nil || id <= 0 {
		return nil, 0, problem.New(problem.NotFound, "not_found", "no such service request")
	}
	body := c.body.(serviceRequestUpdate)
	r, err := a.cfg.Store.UpdateServiceRequest(c.ctx, id, body.State, body.Note, a.cfg.Now())
	if err != nil {
		return nil, 0, err
	}
	a.log.InfoContext(c.ctx, "service request changed", "request", id, "state", body.State, "user", c.p.UserName)
	return serviceRequest(r), http.StatusOK, nil
}

var reservationStates = map[string]bool{cloudstore.ReservationReserved: true, cloudstore.ReservationOutOfStock: true,
	cloudstore.ReservationOutOfWarranty: true, cloudstore.ReservationNoShop: true, cloudstore.ReservationFailed: true}

func (a *API) listReservations(c *call) (any, int, error) {
	qv := c.r.URL.Query()
	f := cloudstore.ReservationFilter{State: qv.Get("state"), Device: qv.Get("device")}
	if f.State != "" && !reservationStates[f.State] {
		return nil, 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_state", Field: "state",
			Detail: "state must be reserved, out_of_stock, out_of_warranty, no_shop or failed"}
	}
	if f.Device != "" && !telemetry.ValidDeviceID(f.Device) {
		return nil, 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_device", Field: "device", Detail: "device must be 64 lower-case hex digits"}
	}
	var err error
	if f.Limit, err = limitParam(c); err != nil {
		return nil, 0, err
	}
	if _, err := readPageToken(c, &f.BeforeID); err != nil {
		return nil, 0, err
	}
	rs, err := a.cfg.Store.ListReservations(c.ctx, f)
	if err != nil {
		return nil, 0, err
	}
	out := client.Page[client.Reservation]{Items: make([]client.Reservation, 0, len(rs))}
	for _, r := range rs {
		out.Items = append(out.Items, reservation(r))
	}
	if len(rs) == f.Limit {
		out.NextPageToken = pageToken(rs[len(rs)-1].ID)
	}
	return out, http.StatusOK, nil
}

// createClaimCodes makes a fresh code per device and stores only its hash: the codes are
// in this answer and nowhere else (TestAPI_ClaimCodesShownOnceStoredHashed).
func (a *API) createClaimCodes(c *call) (any, int, error) {
	body := c.body.(claimCodesCreate)
	now := a.cfg.Now()
	out := client.ClaimCodes{Items: make([]client.ClaimCode, 0, len(body.Devices))}
	stored := make([]cloudstore.ClaimCode, 0, len(body.Devices))
	for _, d := range body.Devices {
		code := claimcode.New()
		h, err := claimcode.Hash(code)
		if err != nil {
			return nil, 0, err // New makes well-formed codes: impossible
		}
		out.Items = append(out.Items, client.ClaimCode{Device: d, Code: code})
		stored = append(stored, cloudstore.ClaimCode{Device: d, Product: body.Product, CodeHash: h, CreatedAt: now})
	}
	if err := a.cfg.Store.PutClaimCodes(c.ctx, stored); err != nil {
		return nil, 0, err
	}
	a.log.InfoContext(c.ctx, "claim codes made", "product", body.Product, "devices", len(body.Devices), "user", c.p.UserName)
	return out, http.StatusCreated, nil
}

func (a *API) recordSale(c *call) (any, int, error) {
	body := c.body.(saleRecord)
	sold, _ := parseSoldAt(body.SoldAt) // validated
	err := a.cfg.Store.RecordSale(c.ctx, cloudstore.Sale{Device: body.Device, Product: body.Product, SoldAt: sold, Shop: body.Shop, RecordedAt: a.cfg.Now()})
	if err != nil {
		return nil, 0, err
	}
	sl, err := a.cfg.Store.GetSale(c.ctx, body.Device)
	if err != nil {
		return nil, 0, err
	}
	a.log.InfoContext(c.ctx, "sale recorded", "device", body.Device, "shop", body.Shop, "user", c.p.UserName)
	return client.Sale{Device: sl.Device, Product: sl.Product, SoldAt: sl.SoldAt, Shop: sl.Shop, RecordedAt: sl.RecordedAt}, http.StatusCreated, nil
}

func serviceRequest(r cloudstore.ServiceRequest) client.ServiceRequest {
	out := client.ServiceRequest{ID: strconv.FormatInt(r.ID, 10), Device: r.Device, Source: r.Source, Description: r.Description,
		State: r.State, Note: r.Note, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
	if r.AlertID != 0 {
		out.AlertID = strconv.FormatInt(r.AlertID, 10)
	}
	if !r.Preferred.IsZero() {
		t := r.Preferred
		out.Preferred = &t
	}
	return out
}

func reservation(r cloudstore.Reservation) client.Reservation {
	out := client.Reservation{ID: strconv.FormatInt(r.ID, 10), Device: r.Device, Part: r.Part, Shop: r.Shop, State: r.State,
		Reference: r.Reference, Reason: r.Reason, CreatedAt: r.CreatedAt}
	if r.AlertID != 0 {
		out.AlertID = strconv.FormatInt(r.AlertID, 10)
	}
	return out
}
