package owners

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/moat-iot/moat/internal/cloud/claimcode"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
)

// Claim makes owner the owner of the appliance whose claim code is code. A code works
// once; an unknown or spent code is ErrBadCode and counts against the owner and the
// client address (ClaimBurst, then one per ClaimRefill: ErrThrottled). Every refusal is
// counted by reason in moat_portal_claim_failures_total.
func (s *Service) Claim(ctx context.Context, owner int64, code, remoteAddr string) (cloudstore.Appliance, error) {
	a, reason, err := s.claim(ctx, owner, code, remoteAddr)
	if reason != "" {
		s.claimFailures.WithLabelValues(reason).Inc()
		s.log.InfoContext(ctx, "appliance claim refused", "reason", reason, "owner_id", owner)
	}
	if err != nil {
		return cloudstore.Appliance{}, err
	}
	s.log.InfoContext(ctx, "appliance claimed", "owner_id", owner, "device_id", a.Device)
	return a, nil
}

func (s *Service) claim(ctx context.Context, owner int64, code, remoteAddr string) (cloudstore.Appliance, string, error) {
	now := s.now()
	ownerKey, addrKey := "owner:"+strconv.FormatInt(owner, 10), clientKey(remoteAddr)
	for _, k := range []string{ownerKey, addrKey} {
		if ok, wait := s.claims.allow(k, now); !ok {
			return cloudstore.Appliance{}, ReasonThrottled, &RetryError{Err: ErrThrottled, After: wait}
		}
	}
	hash, err := claimcode.Hash(code)
	if err != nil {
		return cloudstore.Appliance{}, ReasonMalformed, fmt.Errorf("%w: code: %w", ErrInvalid, err)
	}
	n, err := s.store.CountAppliances(ctx, owner)
	if err != nil {
		return cloudstore.Appliance{}, "", err
	}
	if n >= cloudstore.MaxAppliancesPerOwner {
		return cloudstore.Appliance{}, ReasonTooMany, ErrTooManyAppliances
	}
	a, err := s.store.ClaimAppliance(ctx, owner, hash, now)
	if errors.Is(err, cloudstore.ErrNotFound) {
		s.claims.fail(ownerKey, now)
		s.claims.fail(addrKey, now)
		return cloudstore.Appliance{}, ReasonBadCode, ErrBadCode
	}
	return a, "", err
}

// Appliance returns owner's appliance device; anyone else's, or nobody's, is ErrNotFound,
// the same answer as a device that does not exist.
func (s *Service) Appliance(ctx context.Context, owner int64, device string) (cloudstore.Appliance, error) {
	a, err := s.store.GetAppliance(ctx, device)
	if err != nil || a.OwnerID != owner {
		return cloudstore.Appliance{}, fmt.Errorf("appliance: %w", ErrNotFound)
	}
	return a, nil
}

// Handover issues a new claim code for owner's appliance device and returns it, to be
// shown once: the store keeps its hash. The owner keeps the appliance until the new owner
// claims it with the code; from then on the new owner sees its data from their claim
// only (Appliance.Since) and the previous owner nothing. Asking again replaces the code.
func (s *Service) Handover(ctx context.Context, owner int64, device string) (string, error) {
	a, err := s.Appliance(ctx, owner, device)
	if err != nil {
		return "", err
	}
	code := claimcode.New()
	hash, err := claimcode.Hash(code)
	if err != nil {
		return "", err
	}
	if err := s.store.PutClaimCodes(ctx, []cloudstore.ClaimCode{{Device: a.Device, Product: a.Product, CodeHash: hash, CreatedAt: s.now(), IssuedBy: owner}}); err != nil {
		return "", err
	}
	s.log.InfoContext(ctx, "appliance hand-over code issued", "owner_id", owner, "device_id", a.Device)
	return code, nil
}
