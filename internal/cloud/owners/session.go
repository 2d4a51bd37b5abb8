package owners

import (
	"context"
	"fmt"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/webui"
)

// NewSession opens a portal session for owner and returns its ID for the cookie (the
// store keeps only its hash). Each sign-in gets a new ID, so an ID planted before sign-in
// is worth nothing after it.
func (s *Service) NewSession(ctx context.Context, owner int64) (string, error) {
	id, hash := webui.NewID()
	now := s.now()
	if err := s.store.CreatePortalSession(ctx, cloudstore.PortalSession{IDHash: hash, OwnerID: owner, CreatedAt: now, ExpiresAt: now.Add(SessionLifetime)}); err != nil {
		return "", err
	}
	return id, nil
}

// Session returns the owner of session id and records its use: a session unused for
// SessionIdle, or older than SessionLifetime, is ended, as is one of an owner no longer
// verified or deleted. Every such case is ErrNotFound.
func (s *Service) Session(ctx context.Context, id string) (cloudstore.Owner, error) {
	if len(id) != webui.IDLength {
		return cloudstore.Owner{}, fmt.Errorf("session: %w", ErrNotFound)
	}
	p, err := s.store.UsePortalSession(ctx, webui.HashID(id), s.now(), SessionIdle)
	if err != nil {
		return cloudstore.Owner{}, err
	}
	o, err := s.store.GetOwner(ctx, p.OwnerID)
	if err != nil || o.VerifiedAt.IsZero() {
		return cloudstore.Owner{}, fmt.Errorf("session of owner %d: %w", p.OwnerID, ErrNotFound)
	}
	return o, nil
}

// EndSession ends session id (sign-out).
func (s *Service) EndSession(ctx context.Context, id string) error {
	if len(id) != webui.IDLength {
		return nil
	}
	return s.store.DeletePortalSession(ctx, webui.HashID(id))
}

// PruneSessions deletes ended sessions and expired mailed tokens; the cloud calls it
// periodically.
func (s *Service) PruneSessions(ctx context.Context) (int64, error) {
	now := s.now()
	return s.store.PruneOwnerAuth(ctx, now, now.Add(-SessionIdle))
}
