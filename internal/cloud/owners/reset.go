package owners

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/webui"
)

// Password reset: an owner who forgot their password asks for a link mailed to their
// address and sets a new password with it.
//
// What it enforces (each with its attack):
//   - the request answers the same whether or not the address has an account, and mails
//     nothing for an unknown one (TestOwners_ResetRequestDoesNotRevealAccounts);
//   - requests are limited per client address (the sign-up limiter, SignUpBurst) and to
//     MaxResetMailsPerDay per account, and counted (TestOwners_ResetRequestsAreLimitedAndCounted);
//   - a link works once and for ResetTokenLifetime (TestOwners_ResetTokenWorksOnceAndExpires);
//     a reset token cannot verify and a verify token cannot reset
//     (TestOwners_ResetAndVerifyTokensDoNotMix);
//   - the reset ends every session of the owner and clears the lock
//     (TestOwners_ResetEndsSessionsAndLock).
const (
	// ResetTokenLifetime is how long a mailed reset link works.
	ResetTokenLifetime = time.Hour
	// MaxResetMailsPerDay bounds the reset mails one account is sent in 24 h.
	MaxResetMailsPerDay = 3
)

// ErrResetLink: the reset link is unknown, used or expired.
var ErrResetLink = errors.New("this password reset link is not valid, was used already or has expired; ask for a new one")

// Password reset results (the result label of moat_portal_password_resets_total).
const (
	ResetRequested   = "requested"    // a request answered (whether or not a mail was sent)
	ResetMailed      = "mailed"       // a reset mail enqueued
	ResetDailyLimit  = "daily_limit"  // an account's daily limit reached: no mail
	ResetThrottled   = "throttled"    // a client address over its limit
	ResetDone        = "done"         // a password reset with a link
	ResetBadLink     = "bad_link"     // an unknown, used or expired link
	ResetBadPassword = "bad_password" // a new password that breaks the rules
	metricResets     = "moat_portal_password_resets_total"
)

func newResetMetric() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricResets,
		Help: "Owners' portal password reset requests and resets, by result."}, []string{"result"})
}

var resetResults = []string{ResetRequested, ResetMailed, ResetDailyLimit, ResetThrottled, ResetDone, ResetBadLink, ResetBadPassword}

// RequestReset mails a password reset link to the account of email, if there is one and
// it has been sent fewer than MaxResetMailsPerDay in the last 24 h. The answer is nil
// whether or not the address has an account, so it reveals nothing. Requests share the
// sign-up limiter per client address; a refused one is ErrThrottled. A malformed address
// is ErrInvalid.
func (s *Service) RequestReset(ctx context.Context, email, remoteAddr string) error {
	norm, err := cloudstore.NormalizeEmail(email)
	if err != nil {
		return err
	}
	now := s.now()
	key := clientKey(remoteAddr)
	if ok, wait := s.signUps.allow(key, now); !ok {
		s.resets.WithLabelValues(ResetThrottled).Inc()
		return &RetryError{Err: ErrThrottled, After: wait}
	}
	s.signUps.fail(key, now) // every request counts: each may send a mail
	s.resets.WithLabelValues(ResetRequested).Inc()
	o, err := s.store.OwnerByEmail(ctx, norm)
	if errors.Is(err, cloudstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	n, err := s.store.CountOwnerTokens(ctx, o.ID, cloudstore.TokenReset, now.Add(-24*time.Hour))
	if err != nil {
		return err
	}
	if n >= MaxResetMailsPerDay {
		s.resets.WithLabelValues(ResetDailyLimit).Inc()
		s.log.InfoContext(ctx, "password reset mail not sent: daily limit", "owner_id", o.ID)
		return nil
	}
	token, hash := newToken()
	payload, err := json.Marshal(outbox.EmailPayload{
		To:      o.Email,
		Subject: "Reset your password",
		Text: "Hello " + o.Name + ",\n\nsomeone (we hope you) asked to reset the password of your owners' portal account.\n" +
			"To choose a new password, open this link within an hour:\n\n" +
			s.base + "/portal/reset/confirm?token=" + token + "\n\n" +
			"Setting a new password signs you out everywhere. If you did not ask for this, ignore this mail: your password stays as it is.\n",
	})
	if err != nil {
		return err
	}
	item := cloudstore.OutboxItem{Kind: outbox.KindEmail, Key: "reset:" + strconv.FormatInt(o.ID, 10) + ":" + hash[:16], Payload: payload}
	if err := s.store.CreateOwnerToken(ctx, cloudstore.OwnerToken{Hash: hash, OwnerID: o.ID, Purpose: cloudstore.TokenReset,
		CreatedAt: now, ExpiresAt: now.Add(ResetTokenLifetime)}, item); err != nil {
		return err
	}
	s.resets.WithLabelValues(ResetMailed).Inc()
	s.log.InfoContext(ctx, "password reset mailed", "owner_id", o.ID)
	return nil
}

// ResetPassword sets a new password with a mailed reset token: the sign-up rules apply
// (ErrInvalid), and an unknown, used or expired token is ErrResetLink. The reset ends
// every session of the owner, clears their lock and marks the address verified
// (cloudstore.ResetOwnerPassword, one transaction).
func (s *Service) ResetPassword(ctx context.Context, token, newPassword string) error {
	if len(token) != webui.IDLength {
		s.resets.WithLabelValues(ResetBadLink).Inc()
		return ErrResetLink
	}
	// The rule against the address needs the owner, known only once the token is
	// spent; the other rules are checked first, before any hash is made.
	if err := checkPassword(newPassword, ""); err != nil {
		s.resets.WithLabelValues(ResetBadPassword).Inc()
		return err
	}
	hash := webui.HashID(token)
	o, err := s.store.OwnerByResetToken(ctx, hash, s.now())
	if errors.Is(err, cloudstore.ErrNotFound) {
		s.resets.WithLabelValues(ResetBadLink).Inc()
		return ErrResetLink
	}
	if err != nil {
		return err
	}
	if err := checkPassword(newPassword, o.Email); err != nil {
		s.resets.WithLabelValues(ResetBadPassword).Inc()
		return err
	}
	phc, err := s.hash.hash(ctx, newPassword)
	if err != nil {
		return err
	}
	o, err = s.store.ResetOwnerPassword(ctx, hash, phc, s.now())
	if errors.Is(err, cloudstore.ErrNotFound) {
		s.resets.WithLabelValues(ResetBadLink).Inc()
		return ErrResetLink
	}
	if err != nil {
		return fmt.Errorf("reset password: %w", err)
	}
	s.resets.WithLabelValues(ResetDone).Inc()
	s.log.InfoContext(ctx, "owner password reset", "owner_id", o.ID)
	return nil
}

// CheckResetLink reports whether token is a reset link that works now (nil) or
// ErrResetLink, without spending it: the portal says so before the owner types a new
// password.
func (s *Service) CheckResetLink(ctx context.Context, token string) error {
	if len(token) != webui.IDLength {
		return ErrResetLink
	}
	_, err := s.store.OwnerByResetToken(ctx, webui.HashID(token), s.now())
	if errors.Is(err, cloudstore.ErrNotFound) {
		return ErrResetLink
	}
	return err
}
