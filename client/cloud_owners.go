package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// The cloud's staff routes for the owners' side (issue 14): claim codes made at
// manufacture, sale records, service requests and part reservations.

// ServiceRequest asks the repair shop to look at an appliance.
type ServiceRequest struct {
	ID     string `json:"id"`
	Device string `json:"device"`
	// AlertID is the alert the request was made for, "" for none.
	AlertID string `json:"alert_id,omitempty"`
	// Source is owner, rule or support.
	Source      string     `json:"source"`
	Description string     `json:"description"`
	Preferred   *time.Time `json:"preferred,omitempty"`
	// State is open, scheduled, done or cancelled.
	State     string    `json:"state"`
	Note      string    `json:"note"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ServiceRequestQuery selects service requests.
type ServiceRequestQuery struct {
	State, Device string
	Limit         int
	PageToken     string
}

// ServiceRequestUpdate changes a request's state and its note to the owner.
type ServiceRequestUpdate struct {
	// State is scheduled, done or cancelled (or open again).
	State string `json:"state"`
	Note  string `json:"note,omitempty"`
}

// Reservation is what a warranty part reservation came to.
type Reservation struct {
	ID      string `json:"id"`
	Device  string `json:"device"`
	AlertID string `json:"alert_id,omitempty"`
	Part    string `json:"part"`
	Shop    string `json:"shop"`
	// State is reserved, out_of_stock, out_of_warranty, no_shop or failed.
	State     string    `json:"state"`
	Reference string    `json:"reference,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// ReservationQuery selects reservations.
type ReservationQuery struct {
	State, Device string
	Limit         int
	PageToken     string
}

// ClaimCodesCreate makes claim codes for devices of a product at manufacture.
type ClaimCodesCreate struct {
	Product string   `json:"product"`
	Devices []string `json:"devices"`
}

// ClaimCode is a device's new claim code, shown once: the cloud keeps only its hash.
type ClaimCode struct {
	Device string `json:"device"`
	Code   string `json:"code"`
}

// ClaimCodes is the answer of CreateClaimCodes.
type ClaimCodes struct {
	Items []ClaimCode `json:"items"`
}

// SaleRecord records an appliance's sale: its date starts the warranty, its shop is the
// appliance's first repair shop.
type SaleRecord struct {
	Device  string `json:"device"`
	Product string `json:"product"`
	// SoldAt is an RFC 3339 date (2026-05-01) or time.
	SoldAt string `json:"sold_at"`
	Shop   string `json:"shop"`
}

// Sale is a recorded sale.
type Sale struct {
	Device     string    `json:"device"`
	Product    string    `json:"product"`
	SoldAt     time.Time `json:"sold_at"`
	Shop       string    `json:"shop"`
	RecordedAt time.Time `json:"recorded_at"`
}

// ListServiceRequests returns a page of service requests, newest first.
func (c *Client) ListServiceRequests(ctx context.Context, q ServiceRequestQuery) (Page[ServiceRequest], error) {
	v := url.Values{}
	for k, s := range map[string]string{"state": q.State, "device": q.Device} {
		if s != "" {
			v.Set(k, s)
		}
	}
	setPage(v, q.Limit, q.PageToken)
	var out Page[ServiceRequest]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"service-requests"}, query: v}, &out)
	return out, err
}

// UpdateServiceRequest changes a service request's state and note (Contributor or
// Administrator).
func (c *Client) UpdateServiceRequest(ctx context.Context, id string, u ServiceRequestUpdate) (ServiceRequest, error) {
	var out ServiceRequest
	err := c.do(ctx, request{method: http.MethodPatch, path: []string{"service-requests", id}, body: u}, &out)
	return out, err
}

// ListReservations returns a page of part reservations, newest first.
func (c *Client) ListReservations(ctx context.Context, q ReservationQuery) (Page[Reservation], error) {
	v := url.Values{}
	for k, s := range map[string]string{"state": q.State, "device": q.Device} {
		if s != "" {
			v.Set(k, s)
		}
	}
	setPage(v, q.Limit, q.PageToken)
	var out Page[Reservation]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"reservations"}, query: v}, &out)
	return out, err
}

// CreateClaimCodes makes a new claim code for each device (Contributor or
// Administrator); the codes are in the answer only.
func (c *Client) CreateClaimCodes(ctx context.Context, req ClaimCodesCreate) (ClaimCodes, error) {
	var out ClaimCodes
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"claim-codes"}, body: req}, &out)
	return out, err
}

// RecordSale records or corrects an appliance's sale (Contributor or Administrator).
func (c *Client) RecordSale(ctx context.Context, req SaleRecord) (Sale, error) {
	var out Sale
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"sales"}, body: req}, &out)
	return out, err
}
