package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/envelope"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// A device refused a certificate only because what it runs is out of date (an image below
// its floor, revoked, or unknown) is still a genuine, claimed, unblocked device: it gets a
// recovery grant with the refusal, so that it can fetch its update assignment and images
// and come back with software that attests (ATTACKS row 4: "cert refused; device gets update
// assignment"). A grant is no certificate: it opens only the update routes of the device
// API (the routes marked Recovery in internal/api/mgmt; not even GET /device/me), never a
// tenant's cloud. It ends when the device attests successfully again (it has done its work)
// and each use is logged (issue 10, defect 8; attacked by TestAttest_OutdatedDeviceGetsItsUpdate
// and TestRecovery_EndsOnSuccessfulAttestation).

// RecoveryPrefix starts every recovery token, so it cannot be mistaken for an API token.
const RecoveryPrefix = "moat_rcv_"

// RecoveryTTL is how long a recovery grant lasts.
const RecoveryTTL = time.Hour

// recoverable are the refusals that come with a recovery grant.
var recoverable = map[string]bool{
	device.RefusedUnknownImage: true, device.RefusedRevokedImage: true, device.RefusedBelowFloor: true,
}

// Recovery is a recovery grant, handed to the device with its refusal.
type Recovery struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// TenantID is the tenant that claimed the device: the device's update client needs it,
	// and the grant opens no route that would tell it (the token carries it too).
	TenantID string `json:"tenant_id"`
}

// grant is what the director key signs; Purpose keeps it apart from every other document
// the key signs (an assignment decodes no such field).
type grant struct {
	Purpose   string    `json:"purpose"` // "device-recovery"
	DeviceID  string    `json:"device_id"`
	TenantID  string    `json:"tenant_id"`
	Nonce     string    `json:"nonce"` // random, so that two grants differ
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

const grantPurpose = "device-recovery"

// maxRecoveryToken bounds a presented token.
const maxRecoveryToken = 2048

func (s *Service) newRecovery(dev device.Device, now time.Time) (*Recovery, error) {
	var n [16]byte
	rand.Read(n[:])
	g := grant{Purpose: grantPurpose, DeviceID: string(dev.ID), TenantID: string(dev.TenantID),
		Nonce: base64.RawURLEncoding.EncodeToString(n[:]), IssuedAt: now.Truncate(time.Second), ExpiresAt: now.Truncate(time.Second).Add(RecoveryTTL)}
	body, err := json.Marshal(g)
	if err != nil {
		return nil, err
	}
	env, err := envelope.Seal(&s.cfg.Director.PublicKey, body, func(d []byte) ([]byte, error) {
		return ecdsa.SignASN1(rand.Reader, s.cfg.Director, d)
	})
	if err != nil {
		return nil, err
	}
	return &Recovery{Token: RecoveryPrefix + base64.RawURLEncoding.EncodeToString(env), ExpiresAt: g.ExpiresAt, TenantID: g.TenantID}, nil
}

// AuthenticateRecovery identifies a device by a recovery token presented on route: signed
// by this server's director key, for its purpose, unexpired, for a device still claimed by
// the tenant it names and not blocked, and whose latest fresh attestation is still the
// refusal that came with the grant. Every failure is ErrUnauthenticated; every use is
// logged (Info), so support staff see which devices run on grants and what they fetch.
func (s *Service) AuthenticateRecovery(ctx context.Context, token, route string) (device.Device, error) {
	dev, err := s.authenticateRecovery(ctx, token)
	if errors.Is(err, ErrUnauthenticated) {
		s.metrics.authFailures.Inc()
	}
	if err == nil {
		s.cfg.Logger.InfoContext(ctx, "recovery grant used", "device_id", dev.ID, "tenant_id", dev.TenantID, "route", route)
	}
	return dev, err
}

// parseGrant checks a recovery token's form, signature (by pub) and validity at now.
func parseGrant(token string, pub *ecdsa.PublicKey, now time.Time) (grant, error) {
	var g grant
	raw, ok := strings.CutPrefix(token, RecoveryPrefix)
	if !ok || len(token) > maxRecoveryToken {
		return g, fmt.Errorf("%w: not a recovery token", ErrUnauthenticated)
	}
	env, err := base64.RawURLEncoding.Strict().DecodeString(raw)
	if err != nil {
		return g, fmt.Errorf("%w: recovery token: %w", ErrUnauthenticated, err)
	}
	err = envelope.Open(env, pub, maxRecoveryToken, &g, func() ([]byte, error) { return json.Marshal(g) })
	if err != nil {
		return g, fmt.Errorf("%w: recovery token: %w", ErrUnauthenticated, err)
	}
	if g.Purpose != grantPurpose || !now.Before(g.ExpiresAt) || now.Add(5*time.Minute).Before(g.IssuedAt) ||
		g.ExpiresAt.Sub(g.IssuedAt) > RecoveryTTL {
		return g, fmt.Errorf("%w: recovery token expired or not a recovery grant", ErrUnauthenticated)
	}
	return g, nil
}

func (s *Service) authenticateRecovery(ctx context.Context, token string) (device.Device, error) {
	g, err := parseGrant(token, &s.cfg.Director.PublicKey, s.cfg.Now())
	if err != nil {
		return device.Device{}, err
	}
	var dev device.Device
	err = s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(g.TenantID))
		if err != nil {
			return err
		}
		dev, err = tt.Devices().Get(ctx, device.ID(g.DeviceID))
		return err
	})
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNoTenant) {
		return device.Device{}, fmt.Errorf("%w: device %s is not claimed by %s", ErrUnauthenticated, g.DeviceID, g.TenantID)
	}
	if err != nil {
		return device.Device{}, err
	}
	if dev.Blocked {
		return device.Device{}, fmt.Errorf("%w: device %s is blocked", ErrUnauthenticated, dev.ID)
	}
	// A grant comes only with a refusal that also ends the device's certificate (attest.go,
	// outcome.revoke), so a device that holds a certificate again has attested successfully
	// since its grant was issued: the grant has done its work.
	if cur := dev.Certificate; cur != nil {
		return device.Device{}, fmt.Errorf("%w: device %s attested successfully at %s, after its recovery grant of %s",
			ErrUnauthenticated, dev.ID, cur.IssuedAt.Format(time.RFC3339), g.IssuedAt.Format(time.RFC3339))
	}
	return dev, nil
}
