package cloudstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Owners and their appliances (issue 14). Passwords, claim codes and session IDs reach
// this package only as hashes made by its callers (internal/cloud/owners,
// internal/cloud/claimcode); it never sees a secret.

// Limits of what an owner writes.
const (
	MaxEmailBytes    = 254
	MaxNameBytes     = 100
	MaxNicknameBytes = 60
)

// Owner is an owner's account.
type Owner struct {
	ID           int64
	Email        string
	Name         string
	PasswordHash string
	CreatedAt    time.Time
	VerifiedAt   time.Time // zero until the mailed link is followed
	// FailedSignIns counts consecutive wrong passwords; LockedUntil refuses sign-in before it.
	FailedSignIns int
	LockedUntil   time.Time
}

// NewOwner is what CreateOwner stores.
type NewOwner struct {
	Email        string // any case: stored lower-cased
	Name         string
	PasswordHash string
	CreatedAt    time.Time
}

var (
	hashRE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	shopIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
)

// NormalizeEmail checks an address as an owner types it and returns its stored form: a
// bare address (no display name), lower-cased, at most MaxEmailBytes.
func NormalizeEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > MaxEmailBytes || !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: email: must be an address of at most %d bytes", ErrInvalid, MaxEmailBytes)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || !strings.Contains(s[strings.LastIndexByte(s, '@')+1:], ".") {
		return "", fmt.Errorf("%w: email: %q is not an address like name@example.com", ErrInvalid, s)
	}
	return strings.ToLower(s), nil
}

// CheckText checks a line of text an owner or a member of staff writes: valid UTF-8, at
// most max bytes, no control characters but newlines and tabs when multiline.
func CheckText(field, s string, max int, multiline bool) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s: at most %d bytes", ErrInvalid, field, max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s: not valid UTF-8", ErrInvalid, field)
	}
	for _, r := range s {
		allowed := multiline && (r == '\n' || r == '\t' || r == '\r')
		if r < 0x20 && !allowed || r == 0x7f {
			return fmt.Errorf("%w: %s: control characters are not allowed", ErrInvalid, field)
		}
	}
	return nil
}

func (n NewOwner) validate() (string, error) {
	email, err := NormalizeEmail(n.Email)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(n.Name) == "" {
		errs = append(errs, fmt.Errorf("%w: name: required", ErrInvalid))
	} else if err := CheckText("name", n.Name, MaxNameBytes, false); err != nil {
		errs = append(errs, err)
	}
	if !strings.HasPrefix(n.PasswordHash, "$argon2id$") || len(n.PasswordHash) > 256 {
		errs = append(errs, fmt.Errorf("%w: password_hash: must be an argon2id PHC string", ErrInvalid))
	}
	if n.CreatedAt.IsZero() {
		errs = append(errs, fmt.Errorf("%w: created_at: required", ErrInvalid))
	}
	return email, errors.Join(errs...)
}

// CreateOwner stores a new, unverified owner. An address in use is ErrConflict.
func (s *Store) CreateOwner(ctx context.Context, n NewOwner) (Owner, error) {
	email, err := n.validate()
	if err != nil {
		return Owner{}, err
	}
	var id int64
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO owners (email, name, password_hash, created_us) VALUES ($1, $2, $3, $4) RETURNING id`,
			email, n.Name, n.PasswordHash, us(n.CreatedAt)).Scan(&id)
		if err != nil && s.d.uniqueViolation(err) {
			return fmt.Errorf("an account for this address exists already: %w", ErrConflict)
		}
		return err
	})
	if err != nil {
		return Owner{}, err
	}
	return s.GetOwner(ctx, id)
}

const ownerColumns = `id, email, name, password_hash, created_us, verified_us, failed_signins, locked_until_us`

func scanOwner(sc interface{ Scan(...any) error }) (Owner, error) {
	var o Owner
	var created, locked int64
	var verified sql.NullInt64
	if err := sc.Scan(&o.ID, &o.Email, &o.Name, &o.PasswordHash, &created, &verified, &o.FailedSignIns, &locked); err != nil {
		return o, err
	}
	o.CreatedAt, o.VerifiedAt = fromUS(created), fromNullUS(verified)
	if locked > 0 {
		o.LockedUntil = fromUS(locked)
	}
	return o, nil
}

// GetOwner returns owner id, or ErrNotFound.
func (s *Store) GetOwner(ctx context.Context, id int64) (Owner, error) {
	return s.ownerWhere(ctx, "id = $1", id)
}

// OwnerByEmail returns the owner of an address (any case), or ErrNotFound.
func (s *Store) OwnerByEmail(ctx context.Context, email string) (Owner, error) {
	return s.ownerWhere(ctx, "email = $1", strings.ToLower(strings.TrimSpace(email)))
}

func (s *Store) ownerWhere(ctx context.Context, cond string, arg any) (Owner, error) {
	var o Owner
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		o, err = scanOwner(tx.QueryRowContext(ctx, `SELECT `+ownerColumns+` FROM owners WHERE `+cond, arg))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Owner{}, fmt.Errorf("owner: %w", ErrNotFound)
	}
	return o, err
}

// Sale is the record of an appliance's sale: its purchase date starts the warranty, and
// the shop that sold it is its first repair shop.
type Sale struct {
	Device     string
	Product    string
	SoldAt     time.Time
	Shop       string
	RecordedAt time.Time
}

func (sl Sale) validate() error {
	var errs []error
	if !telemetry.ValidDeviceID(sl.Device) {
		errs = append(errs, errors.New("device: must be 64 lower-case hex digits"))
	}
	if !productRE.MatchString(sl.Product) {
		errs = append(errs, errors.New("product: must be 1 to 64 letters, digits, '_', '.' or '-'"))
	}
	if sl.SoldAt.IsZero() {
		errs = append(errs, errors.New("sold_at: required"))
	} else if !sl.RecordedAt.IsZero() && sl.SoldAt.After(sl.RecordedAt.Add(24*time.Hour)) {
		errs = append(errs, errors.New("sold_at: in the future"))
	}
	if !shopIDRE.MatchString(sl.Shop) {
		errs = append(errs, errors.New("shop: must be 1 to 64 lower-case letters, digits or '-'"))
	}
	if sl.RecordedAt.IsZero() {
		errs = append(errs, errors.New("recorded_at: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: sale: %w", ErrInvalid, err)
	}
	return nil
}

// RecordSale stores or corrects the sale record of a device.
func (s *Store) RecordSale(ctx context.Context, sl Sale) error {
	if err := sl.validate(); err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sales (device, product, sold_us, shop, recorded_us) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (device) DO UPDATE SET product = excluded.product, sold_us = excluded.sold_us, shop = excluded.shop, recorded_us = excluded.recorded_us`,
			sl.Device, sl.Product, us(sl.SoldAt), sl.Shop, us(sl.RecordedAt))
		return err
	})
}

// GetSale returns the sale record of device, or ErrNotFound.
func (s *Store) GetSale(ctx context.Context, device string) (Sale, error) {
	var sl Sale
	var sold, rec int64
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT device, product, sold_us, shop, recorded_us FROM sales WHERE device = $1`, device).
			Scan(&sl.Device, &sl.Product, &sold, &sl.Shop, &rec)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Sale{}, fmt.Errorf("sale: %w", ErrNotFound)
	}
	sl.SoldAt, sl.RecordedAt = fromUS(sold), fromUS(rec)
	return sl, err
}

// ClaimCode is a device's claim code as stored: its hash (claimcode.Hash).
type ClaimCode struct {
	Device    string
	Product   string
	CodeHash  string
	CreatedAt time.Time
	// IssuedBy is the owner who handed the appliance over, 0 for a code made at manufacture.
	IssuedBy int64
}

func (c ClaimCode) validate() error {
	var errs []error
	if !telemetry.ValidDeviceID(c.Device) {
		errs = append(errs, errors.New("device: must be 64 lower-case hex digits"))
	}
	if !productRE.MatchString(c.Product) {
		errs = append(errs, errors.New("product: must be 1 to 64 letters, digits, '_', '.' or '-'"))
	}
	if !hashRE.MatchString(c.CodeHash) {
		errs = append(errs, errors.New("code_hash: must be 64 lower-case hex digits"))
	}
	if c.CreatedAt.IsZero() {
		errs = append(errs, errors.New("created_at: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: claim code: %w", ErrInvalid, err)
	}
	return nil
}

// MaxClaimCodesPerCall bounds one PutClaimCodes.
const MaxClaimCodesPerCall = 10000

// PutClaimCodes stores claim codes, each replacing the device's previous one (an unclaimed
// code made again, or a hand-over's new code), all or nothing.
func (s *Store) PutClaimCodes(ctx context.Context, codes []ClaimCode) error {
	if len(codes) > MaxClaimCodesPerCall {
		return fmt.Errorf("%w: at most %d claim codes at once", ErrInvalid, MaxClaimCodesPerCall)
	}
	for _, c := range codes {
		if err := c.validate(); err != nil {
			return err
		}
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		for _, c := range codes {
			var issued sql.NullInt64
			if c.IssuedBy != 0 {
				issued = sql.NullInt64{Int64: c.IssuedBy, Valid: true}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO claim_codes (device, product, code_hash, created_us, issued_by) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (device) DO UPDATE SET product = excluded.product, code_hash = excluded.code_hash, created_us = excluded.created_us,
				issued_by = excluded.issued_by, claimed_us = NULL, claimed_by = NULL`,
				c.Device, c.Product, c.CodeHash, us(c.CreatedAt), issued)
			if err != nil && s.d.uniqueViolation(err) {
				return fmt.Errorf("claim code of device %.16s is another device's: %w", c.Device, ErrConflict)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// Appliance is an owned appliance.
type Appliance struct {
	Device   string
	OwnerID  int64
	Product  string
	Nickname string
	// Since is when its owner claimed it: the owner sees its data from then on.
	Since time.Time
	// Shop is the owner's repair shop for it ('' none).
	Shop string
}

// ClaimAppliance spends the unclaimed claim code with hash codeHash and makes owner the
// appliance's owner from at, in one transaction: a code works once (a second claim of it
// is ErrNotFound, as is an unknown code, so a guesser learns nothing from the answer). A
// code issued by an owner handing the appliance over moves it from them. The repair shop
// starts as the sale's shop, or the previous owner's choice.
func (s *Store) ClaimAppliance(ctx context.Context, owner int64, codeHash string, at time.Time) (Appliance, error) {
	if !hashRE.MatchString(codeHash) || owner <= 0 || at.IsZero() {
		return Appliance{}, fmt.Errorf("%w: claim: owner, code hash and time required", ErrInvalid)
	}
	var a Appliance
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var device, product string
		err := tx.QueryRowContext(ctx, `UPDATE claim_codes SET claimed_us = $1, claimed_by = $2
			WHERE code_hash = $3 AND claimed_us IS NULL RETURNING device, product`, us(at), owner, codeHash).Scan(&device, &product)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("claim code: %w", ErrNotFound)
		}
		if err != nil {
			return err
		}
		shop := ""
		if err := tx.QueryRowContext(ctx, `SELECT shop FROM appliances WHERE device = $1`, device).Scan(&shop); errors.Is(err, sql.ErrNoRows) {
			if err := tx.QueryRowContext(ctx, `SELECT shop FROM sales WHERE device = $1`, device).Scan(&shop); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		} else if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO appliances (device, owner_id, product, nickname, since_us, shop) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (device) DO UPDATE SET owner_id = excluded.owner_id, product = excluded.product, nickname = excluded.nickname,
			since_us = excluded.since_us, shop = excluded.shop`, device, owner, product, product, us(at), shop)
		if err != nil {
			return err
		}
		a = Appliance{Device: device, OwnerID: owner, Product: product, Nickname: product, Since: at.UTC().Truncate(time.Microsecond), Shop: shop}
		return nil
	})
	return a, err
}

const applianceColumns = `device, owner_id, product, nickname, since_us, shop`

func scanAppliance(sc interface{ Scan(...any) error }) (Appliance, error) {
	var a Appliance
	var since int64
	err := sc.Scan(&a.Device, &a.OwnerID, &a.Product, &a.Nickname, &since, &a.Shop)
	a.Since = fromUS(since)
	return a, err
}

// GetAppliance returns the owned appliance device, or ErrNotFound when nobody owns it.
func (s *Store) GetAppliance(ctx context.Context, device string) (Appliance, error) {
	var a Appliance
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		a, err = scanAppliance(tx.QueryRowContext(ctx, `SELECT `+applianceColumns+` FROM appliances WHERE device = $1`, device))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Appliance{}, fmt.Errorf("appliance: %w", ErrNotFound)
	}
	return a, err
}

// MaxAppliancesPerOwner bounds what Appliances returns (and what one owner may hold).
const MaxAppliancesPerOwner = 100

// Appliances returns the appliances owner owns, by device ID.
func (s *Store) Appliances(ctx context.Context, owner int64) ([]Appliance, error) {
	var out []Appliance
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+applianceColumns+` FROM appliances WHERE owner_id = $1 ORDER BY device LIMIT $2`, owner, MaxAppliancesPerOwner)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			a, err := scanAppliance(rows)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return rows.Err()
	})
	return out, err
}

// UpdateAppliance sets the nickname and repair shop of owner's appliance; another owner's
// (or nobody's) is ErrNotFound.
func (s *Store) UpdateAppliance(ctx context.Context, owner int64, device, nickname, shop string) error {
	var errs []error
	if strings.TrimSpace(nickname) == "" {
		errs = append(errs, fmt.Errorf("%w: nickname: required", ErrInvalid))
	} else if err := CheckText("nickname", nickname, MaxNicknameBytes, false); err != nil {
		errs = append(errs, err)
	}
	if shop != "" && !shopIDRE.MatchString(shop) {
		errs = append(errs, fmt.Errorf("%w: shop: must be 1 to 64 lower-case letters, digits or '-'", ErrInvalid))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE appliances SET nickname = $1, shop = $2 WHERE device = $3 AND owner_id = $4`, nickname, shop, device, owner)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("appliance: %w", ErrNotFound)
		}
		return nil
	})
}

// ApplianceInfo is what the cloud's actions need to know of a device: its owner (OwnerID 0
// when nobody has claimed it) and its sale (SoldAt zero when none is recorded).
type ApplianceInfo struct {
	Device        string
	Product       string
	OwnerID       int64
	OwnerName     string
	OwnerEmail    string
	OwnerVerified bool
	Nickname      string
	Since         time.Time
	Shop          string // the owner's repair shop, else the selling shop
	SoldAt        time.Time
	SaleShop      string
}

// ApplianceInfo returns what is known of device's owner and sale; a device nobody owns
// and nobody sold is not an error (zero fields).
func (s *Store) ApplianceInfo(ctx context.Context, device string) (ApplianceInfo, error) {
	info := ApplianceInfo{Device: device}
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		var since int64
		var verified sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT a.product, a.owner_id, o.name, o.email, o.verified_us, a.nickname, a.since_us, a.shop
			FROM appliances a JOIN owners o ON o.id = a.owner_id WHERE a.device = $1`, device).
			Scan(&info.Product, &info.OwnerID, &info.OwnerName, &info.OwnerEmail, &verified, &info.Nickname, &since, &info.Shop)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			info.Since, info.OwnerVerified = fromUS(since), verified.Valid
		}
		var sold int64
		var product string
		err = tx.QueryRowContext(ctx, `SELECT product, sold_us, shop FROM sales WHERE device = $1`, device).Scan(&product, &sold, &info.SaleShop)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return err
		}
		info.SoldAt = fromUS(sold)
		if info.Product == "" {
			info.Product = product
		}
		if info.Shop == "" {
			info.Shop = info.SaleShop
		}
		return nil
	})
	return info, err
}
