// Package owners keeps the accounts of appliance owners for the owners' portal
// (internal/cloud/portal): sign-up with a mailed verification link, sign-in, sessions,
// claiming an appliance with its claim code, and handing one over to a new owner.
//
// What it enforces (DESIGN rule 5 and the bad-input list; each with its attack):
//   - passwords are hashed with argon2id (OWASP parameters) and at most MaxConcurrentHashes
//     hashes run at once, so a sign-in flood is refused (ErrBusy) instead of exhausting
//     memory (TestOwners_HashFloodIsRefused);
//   - wrong passwords are counted per account (a lock after LockAfter failures, doubling
//     each time) and per client address (a bounded in-memory limiter), and an unknown
//     address costs the same hash as a known one (TestOwners_PasswordGuessingIsSlowedAndCounted);
//   - claim-code guesses are limited per owner and per address and counted
//     (TestOwners_ClaimGuessingIsSlowedAndCounted); a code works once
//     (TestOwners_ClaimCodeWorksOnce);
//   - a second sign-up for an address gives the same answer as the first and reveals
//     nothing (TestOwners_SignUpDoesNotRevealAccounts);
//   - an owner reaches only their own appliances, and after a hand-over the new owner sees
//     data only from their claim (TestOwners_HandoverMovesApplianceAndHidesPastData).
//
// Secrets (passwords, tokens, session IDs, claim codes) reach the store only as hashes
// and are never logged. A Service is safe for concurrent use.
package owners

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/webui"
)

// Limits and lifetimes.
const (
	// VerifyTokenLifetime is how long a mailed verification link works.
	VerifyTokenLifetime = 48 * time.Hour
	// MaxVerifyMailsPerDay bounds the verification mails one account is sent in 24 h.
	MaxVerifyMailsPerDay = 3
	// SessionIdle ends a session unused this long; SessionLifetime ends any session.
	SessionIdle     = 30 * time.Minute
	SessionLifetime = 12 * time.Hour
	// LockAfter wrong passwords in a row lock an account for LockBase, doubling with each
	// further one, up to LockMax.
	LockAfter = 5
	LockBase  = time.Minute
	LockMax   = time.Hour
	// MaxConcurrentHashes bounds the argon2id hashes running at once (19 MiB each);
	// HashWait is how long a request waits for one before ErrBusy.
	MaxConcurrentHashes = 4
	HashWait            = 2 * time.Second
	// MaxTrackedClients bounds each in-memory limiter's map of client addresses and owners.
	MaxTrackedClients = 10000
	// AddressSignInBurst wrong passwords from one client address, then one per
	// AddressSignInRefill.
	AddressSignInBurst  = 20
	AddressSignInRefill = time.Minute
	// SignUpBurst sign-ups (and verification re-sends) from one address, then one per
	// SignUpRefill.
	SignUpBurst  = 5
	SignUpRefill = 10 * time.Minute
	// ClaimBurst wrong claim codes per owner and per address, then one per ClaimRefill.
	ClaimBurst  = 10
	ClaimRefill = time.Minute
)

// Errors callers branch on. Their messages are fit to show an owner.
var (
	// ErrInvalid is input that breaks a rule (cloudstore's sentinel: the store's checks
	// and this package's are one kind); the error's text names the field.
	ErrInvalid = cloudstore.ErrInvalid
	// ErrNotFound is an unknown, expired or someone else's thing.
	ErrNotFound = cloudstore.ErrNotFound
	// ErrBadCredentials: wrong address or password (never which).
	ErrBadCredentials = errors.New("the email address or the password is wrong")
	// ErrUnverified: the right password, but the address is not verified yet.
	ErrUnverified = errors.New("your email address is not verified yet: follow the link we mailed you, or ask for a new one")
	// ErrLocked: too many wrong passwords for this account; see RetryAfter.
	ErrLocked = errors.New("too many wrong passwords for this account; try again later")
	// ErrThrottled: too many failed attempts from this client or owner; see RetryAfter.
	ErrThrottled = errors.New("too many failed attempts; try again later")
	// ErrBusy: every password-hashing slot is taken; retry in a moment (HTTP 503).
	ErrBusy = errors.New("the service is busy; try again in a moment")
	// ErrBadCode: the claim code is unknown or was used already.
	ErrBadCode = errors.New("this claim code is not valid or has been used already")
	// ErrTooManyAppliances: the owner holds cloudstore.MaxAppliancesPerOwner appliances.
	ErrTooManyAppliances = fmt.Errorf("an account holds at most %d appliances", cloudstore.MaxAppliancesPerOwner)
)

// RetryError is ErrLocked or ErrThrottled with the time to wait.
type RetryError struct {
	Err   error
	After time.Duration
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("%v (in %s)", e.Err, e.After.Round(time.Second))
}
func (e *RetryError) Unwrap() error { return e.Err }

// RetryAfter returns how long err says to wait (0 when it says nothing).
func RetryAfter(err error) time.Duration {
	if r, ok := errors.AsType[*RetryError](err); ok {
		return r.After
	}
	return 0
}

// Config is a Service's configuration; every field is required.
type Config struct {
	Store *cloudstore.Store
	// BaseURL is the portal's public https URL (no path), for the links mailed to owners.
	BaseURL    string
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("owners: store: required"))
	}
	if u, err := url.Parse(c.BaseURL); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		errs = append(errs, fmt.Errorf("owners: base_url: must be an https URL without a path, not %q", c.BaseURL))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("owners: now: required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("owners: logger: required"))
	}
	if c.Registerer == nil {
		errs = append(errs, errors.New("owners: registerer: required"))
	}
	return errors.Join(errs...)
}

// Sign-in and claim failure reasons (the reason label of the metrics).
const (
	ReasonInvalid        = "invalid"
	ReasonUnknownEmail   = "unknown_email"
	ReasonBadPassword    = "bad_password"
	ReasonLocked         = "locked"
	ReasonUnverified     = "unverified"
	ReasonThrottled      = "throttled"
	ReasonBusy           = "busy"
	ReasonMalformed      = "malformed"
	ReasonBadCode        = "bad_code"
	ReasonTooMany        = "too_many_appliances"
	metricSignInFailures = "moat_portal_signin_failures_total"
	metricClaimFailures  = "moat_portal_claim_failures_total"
)

// Service is the owners' accounts.
type Service struct {
	store   *cloudstore.Store
	base    string
	now     func() time.Time
	log     *slog.Logger
	hash    *hasher
	dummy   string // a hash checked for unknown addresses, so they cost the same time
	signIns *limiter
	// phantoms lock addresses without an account as accounts are locked.
	phantoms *phantomLocks
	signUps  *limiter
	claims   *limiter

	signInFailures *prometheus.CounterVec
	claimFailures  *prometheus.CounterVec
	resets         *prometheus.CounterVec
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{
		store:    cfg.Store,
		base:     strings.TrimSuffix(cfg.BaseURL, "/"),
		now:      cfg.Now,
		log:      cfg.Logger,
		hash:     &hasher{slots: make(chan struct{}, MaxConcurrentHashes), wait: HashWait},
		signIns:  newLimiter(AddressSignInBurst, AddressSignInRefill, MaxTrackedClients),
		phantoms: newPhantomLocks(MaxTrackedClients),
		signUps:  newLimiter(SignUpBurst, SignUpRefill, MaxTrackedClients),
		claims:   newLimiter(ClaimBurst, ClaimRefill, MaxTrackedClients),
		signInFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricSignInFailures,
			Help: "Owners' portal sign-ins refused, by reason."}, []string{"reason"}),
		claimFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricClaimFailures,
			Help: "Owners' portal appliance claims refused, by reason."}, []string{"reason"}),
		resets: newResetMetric(),
	}
	if err := errors.Join(cfg.Registerer.Register(s.signInFailures), cfg.Registerer.Register(s.claimFailures), cfg.Registerer.Register(s.resets)); err != nil {
		return nil, fmt.Errorf("owners: register metrics: %w", err)
	}
	for _, r := range []string{ReasonInvalid, ReasonUnknownEmail, ReasonBadPassword, ReasonLocked, ReasonUnverified, ReasonThrottled, ReasonBusy} {
		s.signInFailures.WithLabelValues(r)
	}
	for _, r := range []string{ReasonMalformed, ReasonBadCode, ReasonThrottled, ReasonTooMany} {
		s.claimFailures.WithLabelValues(r)
	}
	for _, r := range resetResults {
		s.resets.WithLabelValues(r)
	}
	var err error
	if s.dummy, err = s.hash.hash(context.Background(), "moat dummy password for unknown addresses"); err != nil {
		return nil, err
	}
	return s, nil
}

// lockUntil is the account lock after n wrong passwords in a row at now.
func lockUntil(n int, now time.Time) time.Time {
	if n < LockAfter {
		return time.Time{}
	}
	d := LockBase
	for i := LockAfter; i < n && d < LockMax; i++ {
		d *= 2
	}
	return now.Add(min(d, LockMax))
}

// newToken returns a fresh random token for a mailed link and its stored hash.
func newToken() (token, hash string) { return webui.NewID() }
