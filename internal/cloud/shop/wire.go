// Package shop is the cloud's side of the repair shop inventory contract
// (docs/repair-shop-api.md): the shops file that names each repair shop's service, and a
// Client that asks a shop whether a part is in stock and reserves one.
//
// A shop is a third party: its replies are untrusted input. The Client follows no
// redirects, bounds every call by a timeout and every reply by MaxReplyBytes, and decodes
// replies with DecodeReservation, DecodeStock and DecodeProblem, which are lenient on
// unknown fields (a shop may add members, as RFC 9457 allows for problems) but strict on
// the members they read: their JSON types, sizes and syntax, one JSON object of valid
// UTF-8 and nothing after it (DESIGN rule 5; attacked by TestDecode_RefusesMalformed,
// FuzzDecodeReservation and FuzzDecodeProblem). The cloud sends a shop no owner's name or
// address: a part, a device ID, a product and an opaque case reference.
//
// A Client and a Directory are safe for concurrent use.
package shop

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"
)

// Problem types of the contract (RFC 9457 "type" members).
const (
	TypeBase = "urn:moat:repair-shop:"
	// TypeOutOfStock is a 409 to a reservation: the part is not in stock.
	TypeOutOfStock = TypeBase + "out-of-stock"
	// TypeIdempotencyKeyReused is a 409: the key was used for another request body.
	TypeIdempotencyKeyReused = TypeBase + "idempotency-key-reused"
	// TypeUnauthorized (401), TypeForbidden (403), TypeInvalid (422, 400), TypeNotFound
	// (404), TypeTooLarge (413) and TypeUnsupportedMediaType (415).
	TypeUnauthorized         = TypeBase + "unauthorized"
	TypeForbidden            = TypeBase + "forbidden"
	TypeInvalid              = TypeBase + "invalid-request"
	TypeNotFound             = TypeBase + "not-found"
	TypeTooLarge             = TypeBase + "too-large"
	TypeUnsupportedMediaType = TypeBase + "unsupported-media-type"
)

// StateReserved is the one state a reservation reply may carry.
const StateReserved = "reserved"

// Limits of the contract.
const (
	// MaxReplyBytes bounds a shop's reply body.
	MaxReplyBytes = 64 << 10
	// MaxRequestBytes bounds a request body (a shop refuses more with 413).
	MaxRequestBytes = 4 << 10
	// MaxIDBytes bounds a reservation ID (the cloud records it as the reference).
	MaxIDBytes = 128
	// MaxIdempotencyKeyBytes bounds the Idempotency-Key header.
	MaxIdempotencyKeyBytes = 200
	// MaxReasonBytes bounds a reservation's reason.
	MaxReasonBytes = 500
	maxProblemText = 1024
	maxProblemType = 256
)

var (
	// PartRE is the syntax of a part number (as cloudstore and the rule files keep it).
	PartRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	// IdempotencyKeyRE is the syntax of an Idempotency-Key (an outbox key).
	IdempotencyKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$`)
)

// Stock is the reply to GET /v1/parts/{part}.
type Stock struct {
	Part    string `json:"part"`
	InStock int    `json:"in_stock"`
}

// ReservationRequest is the body of POST /v1/reservations.
type ReservationRequest struct {
	Part    string `json:"part"`
	Device  string `json:"device"`
	Product string `json:"product"`
	// CustomerRef is the cloud's opaque reference of the case ("moat-alert-42"), so the
	// shop can quote it; never an owner's name or address.
	CustomerRef string `json:"customer_ref"`
	Reason      string `json:"reason"`
}

// Reservation is the reply to POST /v1/reservations (201 new, 200 the same key again).
type Reservation struct {
	ID        string    `json:"id"`
	Part      string    `json:"part"`
	State     string    `json:"state"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Problem is an RFC 9457 problem document as a shop sends it.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// ErrMalformed is a reply that does not keep the contract.
var ErrMalformed = errors.New("malformed reply")

// decodeObject decodes data, one JSON object of valid UTF-8 and nothing after it, into v.
// Unknown members are ignored; members of the wrong JSON type are refused.
func decodeObject(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) > MaxReplyBytes {
		return fmt.Errorf("%w: more than %d bytes", ErrMalformed, MaxReplyBytes)
	}
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	if len(data) == 0 || data[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.InputOffset() != int64(len(data)) {
		return fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	return nil
}

// printable reports whether s is at most max bytes of text without control characters.
func printable(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// DecodeReservation decodes and checks a reservation reply: an id of 1 to MaxIDBytes
// printable bytes, a part number, state "reserved" and an RFC 3339 expires_at.
func DecodeReservation(data []byte) (Reservation, error) {
	var wire struct {
		ID        *string `json:"id"`
		Part      *string `json:"part"`
		State     *string `json:"state"`
		ExpiresAt *string `json:"expires_at"`
	}
	if err := decodeObject(data, &wire); err != nil {
		return Reservation{}, err
	}
	var errs []error
	var r Reservation
	switch {
	case wire.ID == nil || *wire.ID == "" || !printable(*wire.ID, MaxIDBytes):
		errs = append(errs, fmt.Errorf("id: must be 1 to %d printable bytes", MaxIDBytes))
	default:
		r.ID = *wire.ID
	}
	if wire.Part == nil || !PartRE.MatchString(*wire.Part) {
		errs = append(errs, errors.New("part: must be a part number"))
	} else {
		r.Part = *wire.Part
	}
	if wire.State == nil || *wire.State != StateReserved {
		errs = append(errs, errors.New(`state: must be "reserved"`))
	} else {
		r.State = *wire.State
	}
	if wire.ExpiresAt == nil || len(*wire.ExpiresAt) > 64 {
		errs = append(errs, errors.New("expires_at: required"))
	} else if t, err := time.Parse(time.RFC3339Nano, *wire.ExpiresAt); err != nil {
		errs = append(errs, errors.New("expires_at: must be an RFC 3339 time"))
	} else {
		r.ExpiresAt = t
	}
	if err := errors.Join(errs...); err != nil {
		return Reservation{}, fmt.Errorf("%w: reservation: %w", ErrMalformed, err)
	}
	return r, nil
}

// DecodeStock decodes and checks a stock reply: a part number and a count of 0 to 1e9.
func DecodeStock(data []byte) (Stock, error) {
	var wire struct {
		Part    *string `json:"part"`
		InStock *int64  `json:"in_stock"`
	}
	if err := decodeObject(data, &wire); err != nil {
		return Stock{}, err
	}
	if wire.Part == nil || !PartRE.MatchString(*wire.Part) || wire.InStock == nil || *wire.InStock < 0 || *wire.InStock > 1e9 {
		return Stock{}, fmt.Errorf("%w: stock: want a part number and in_stock from 0 to 1e9", ErrMalformed)
	}
	return Stock{Part: *wire.Part, InStock: int(*wire.InStock)}, nil
}

// DecodeProblem decodes and checks a problem document: every member optional, type at
// most 256 printable bytes, title and detail at most 1024, status 0 or 100 to 599.
func DecodeProblem(data []byte) (Problem, error) {
	var p Problem
	if err := decodeObject(data, &p); err != nil {
		return Problem{}, err
	}
	if !printable(p.Type, maxProblemType) || !printable(p.Title, maxProblemText) || !printable(p.Detail, maxProblemText) ||
		(p.Status != 0 && (p.Status < 100 || p.Status > 599)) {
		return Problem{}, fmt.Errorf("%w: problem: type, title, detail or status out of bounds", ErrMalformed)
	}
	return p, nil
}
