package owners

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/webui"
)

// checkSignUp checks what an owner typed to sign up, reporting every problem, before any
// password is hashed.
func checkSignUp(email, name, password string) (string, error) {
	var errs []error
	norm, err := cloudstore.NormalizeEmail(email)
	if err != nil {
		errs = append(errs, err)
	}
	name = strings.TrimSpace(name)
	if name == "" {
		errs = append(errs, fmt.Errorf("%w: name: required", ErrInvalid))
	} else if err := cloudstore.CheckText("name", name, cloudstore.MaxNameBytes, false); err != nil {
		errs = append(errs, err)
	}
	if err := checkPassword(password, norm); err != nil {
		errs = append(errs, err)
	}
	return norm, errors.Join(errs...)
}

// SignUp creates an unverified account and mails its verification link. An address that
// has an account already gets the same answer (nil) and nothing is created: its owner is
// mailed instead (a new link while unverified, else a notice, at most once an hour), so the
// answer reveals nothing about which addresses have accounts. Sign-ups are limited per
// client address (SignUpBurst); a refused one is ErrThrottled.
func (s *Service) SignUp(ctx context.Context, email, name, password, remoteAddr string) error {
	norm, err := checkSignUp(email, name, password)
	if err != nil {
		return err
	}
	now := s.now()
	key := clientKey(remoteAddr)
	if ok, wait := s.signUps.allow(key, now); !ok {
		return &RetryError{Err: ErrThrottled, After: wait}
	}
	s.signUps.fail(key, now) // every sign-up counts: each costs a hash and sends a mail
	// Hash first in both cases, so an existing address answers as slowly as a new one.
	phc, err := s.hash.hash(ctx, password)
	if err != nil {
		return err
	}
	o, err := s.store.CreateOwner(ctx, cloudstore.NewOwner{Email: norm, Name: strings.TrimSpace(name), PasswordHash: phc, CreatedAt: now})
	if errors.Is(err, cloudstore.ErrConflict) {
		return s.signUpExisting(ctx, norm, now)
	}
	if err != nil {
		return err
	}
	s.log.InfoContext(ctx, "owner signed up", "owner_id", o.ID)
	return s.mailVerification(ctx, o, now)
}

func (s *Service) signUpExisting(ctx context.Context, email string, now time.Time) error {
	o, err := s.store.OwnerByEmail(ctx, email)
	if err != nil {
		return err
	}
	if o.VerifiedAt.IsZero() {
		return s.mailVerification(ctx, o, now)
	}
	// The key names the hour: the notice is sent at most once an hour however often someone
	// signs up with the address.
	hour := now.UTC().Truncate(time.Hour).Unix()
	return s.enqueueMail(ctx, now, "signup-exists:"+strconv.FormatInt(o.ID, 10)+":"+strconv.FormatInt(hour, 10), outbox.EmailPayload{
		To:      o.Email,
		Subject: "Someone tried to sign up with your address",
		Text: "Hello " + o.Name + ",\n\nsomeone tried to create a new owners' portal account with this address, which has an account already.\n" +
			"If it was you, sign in at " + s.base + "/portal/sign-in\nIf it was not, you need not do anything.\n",
	})
}

// mailVerification makes a verification token for o and mails its link, unless o has been
// sent MaxVerifyMailsPerDay in the last 24 h (then it does nothing: the answer is the same).
func (s *Service) mailVerification(ctx context.Context, o cloudstore.Owner, now time.Time) error {
	n, err := s.store.CountOwnerTokens(ctx, o.ID, cloudstore.TokenVerify, now.Add(-24*time.Hour))
	if err != nil {
		return err
	}
	if n >= MaxVerifyMailsPerDay {
		s.log.InfoContext(ctx, "verification mail not sent again: daily limit", "owner_id", o.ID)
		return nil
	}
	token, hash := newToken()
	payload, err := json.Marshal(outbox.EmailPayload{
		To:      o.Email,
		Subject: "Verify your email address",
		Text: "Hello " + o.Name + ",\n\nto finish creating your owners' portal account, open this link within 48 hours:\n\n" +
			s.base + "/portal/verify?token=" + token + "\n\nIf you did not sign up, ignore this mail.\n",
	})
	if err != nil {
		return err
	}
	item := cloudstore.OutboxItem{Kind: outbox.KindEmail, Key: "verify:" + strconv.FormatInt(o.ID, 10) + ":" + hash[:16], Payload: payload}
	return s.store.CreateOwnerToken(ctx, cloudstore.OwnerToken{Hash: hash, OwnerID: o.ID, Purpose: cloudstore.TokenVerify,
		CreatedAt: now, ExpiresAt: now.Add(VerifyTokenLifetime)}, item)
}

func (s *Service) enqueueMail(ctx context.Context, now time.Time, key string, m outbox.EmailPayload) error {
	payload, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return s.store.EnqueueOutbox(ctx, now, cloudstore.OutboxItem{Kind: outbox.KindEmail, Key: key, Payload: payload})
}

// ResendVerification mails a new verification link to the unverified account of email,
// within the daily limit. The answer is nil whether or not the address has an account.
func (s *Service) ResendVerification(ctx context.Context, email, remoteAddr string) error {
	norm, err := cloudstore.NormalizeEmail(email)
	if err != nil {
		return err
	}
	now := s.now()
	key := clientKey(remoteAddr)
	if ok, wait := s.signUps.allow(key, now); !ok {
		return &RetryError{Err: ErrThrottled, After: wait}
	}
	s.signUps.fail(key, now)
	o, err := s.store.OwnerByEmail(ctx, norm)
	if errors.Is(err, cloudstore.ErrNotFound) || err == nil && !o.VerifiedAt.IsZero() {
		return nil
	}
	if err != nil {
		return err
	}
	return s.mailVerification(ctx, o, now)
}

// Verify spends a mailed verification token and returns its now verified owner. An
// unknown, used or expired token is ErrNotFound.
func (s *Service) Verify(ctx context.Context, token string) (cloudstore.Owner, error) {
	if len(token) != webui.IDLength {
		return cloudstore.Owner{}, fmt.Errorf("verification link: %w", ErrNotFound)
	}
	o, err := s.store.VerifyOwner(ctx, webui.HashID(token), s.now())
	if err != nil {
		return cloudstore.Owner{}, err
	}
	s.log.InfoContext(ctx, "owner verified", "owner_id", o.ID)
	return o, nil
}

// SignIn checks an owner's address and password. Refusals are ErrInvalid (malformed),
// ErrBadCredentials, ErrUnverified (only after the right password), ErrLocked and
// ErrThrottled (RetryError), or ErrBusy; each is counted by reason.
func (s *Service) SignIn(ctx context.Context, email, password, remoteAddr string) (cloudstore.Owner, error) {
	o, reason, err := s.signIn(ctx, email, password, remoteAddr)
	if reason != "" {
		s.signInFailures.WithLabelValues(reason).Inc()
		s.log.InfoContext(ctx, "owner sign-in refused", "reason", reason, "owner_id", o.ID)
		return cloudstore.Owner{}, err
	}
	if err != nil {
		return cloudstore.Owner{}, err
	}
	return o, nil
}

func (s *Service) signIn(ctx context.Context, email, password, remoteAddr string) (cloudstore.Owner, string, error) {
	norm, err := cloudstore.NormalizeEmail(email)
	if err != nil || password == "" || len(password) > MaxPasswordBytes {
		return cloudstore.Owner{}, ReasonInvalid, errors.Join(err, fmt.Errorf("%w: enter your email address and your password", ErrInvalid))
	}
	now := s.now()
	key := clientKey(remoteAddr)
	if ok, wait := s.signIns.allow(key, now); !ok {
		return cloudstore.Owner{}, ReasonThrottled, &RetryError{Err: ErrThrottled, After: wait}
	}
	o, err := s.store.OwnerByEmail(ctx, norm)
	if errors.Is(err, cloudstore.ErrNotFound) {
		// The same answers as a known address: locked after as many tries, and the same
		// work, so neither the words nor the timing tell which addresses have accounts.
		// Attacked by TestOwners_LockDoesNotRevealAccounts.
		if until := s.phantoms.lockedUntil(norm, now); !until.IsZero() {
			s.signIns.fail(key, now)
			return cloudstore.Owner{}, ReasonLocked, &RetryError{Err: ErrLocked, After: until.Sub(now)}
		}
		if _, err := s.hash.verify(ctx, s.dummy, password); errors.Is(err, ErrBusy) {
			return cloudstore.Owner{}, ReasonBusy, err
		}
		s.signIns.fail(key, now)
		s.phantoms.fail(norm, now)
		return cloudstore.Owner{}, ReasonUnknownEmail, ErrBadCredentials
	}
	if err != nil {
		return cloudstore.Owner{}, "", err
	}
	if o.LockedUntil.After(now) {
		s.signIns.fail(key, now)
		return o, ReasonLocked, &RetryError{Err: ErrLocked, After: o.LockedUntil.Sub(now)}
	}
	ok, err := s.hash.verify(ctx, o.PasswordHash, password)
	if errors.Is(err, ErrBusy) {
		return o, ReasonBusy, err
	}
	if err != nil {
		return o, "", fmt.Errorf("check password of owner %d: %w", o.ID, err)
	}
	if !ok {
		s.signIns.fail(key, now)
		if _, err := s.store.RecordSignInFailure(ctx, o.ID, func(n int) time.Time { return lockUntil(n, now) }); err != nil {
			return o, "", err
		}
		return o, ReasonBadPassword, ErrBadCredentials
	}
	if o.VerifiedAt.IsZero() {
		return o, ReasonUnverified, ErrUnverified
	}
	if o.FailedSignIns > 0 {
		if err := s.store.RecordSignIn(ctx, o.ID); err != nil {
			return o, "", err
		}
		o.FailedSignIns, o.LockedUntil = 0, time.Time{}
	}
	s.log.InfoContext(ctx, "owner signed in", "owner_id", o.ID)
	return o, "", nil
}
