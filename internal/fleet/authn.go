package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Authenticate identifies the device behind a TLS connection by its client certificate:
// the certificate must chain through a CA of the tenant it names, trusted now, to the
// platform root; the server must have recorded it as issued to that device; and the
// device must still be claimed by that tenant and not blocked (checked on every request,
// so blocking takes effect at once). Every failure is ErrUnauthenticated, wrapped with the
// reason for the log.
func (s *Service) Authenticate(ctx context.Context, cs *tls.ConnectionState) (device.Device, error) {
	dev, err := s.authenticate(ctx, cs)
	if err != nil && errors.Is(err, ErrUnauthenticated) {
		s.metrics.authFailures.Inc()
	}
	return dev, err
}

func (s *Service) authenticate(ctx context.Context, cs *tls.ConnectionState) (device.Device, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return device.Device{}, fmt.Errorf("%w: no client certificate", ErrUnauthenticated)
	}
	leaf := cs.PeerCertificates[0]
	t, _, err := deviceca.ParseDeviceURI(leaf)
	if err != nil {
		return device.Device{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	root, _, err := s.rootCert(ctx)
	if errors.Is(err, ErrNoPlatformCA) {
		return device.Device{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	} else if err != nil {
		return device.Device{}, err
	}
	tr, err := s.tenantTrust(ctx, tenant.ID(t))
	if errors.Is(err, store.ErrNoTenant) {
		return device.Device{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	} else if err != nil {
		return device.Device{}, err
	}
	tid, did, _, err := deviceca.VerifyDevice(leaf, tr.trusted, root, s.cfg.Now())
	if err != nil {
		return device.Device{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	serial := fmt.Sprintf("%x", leaf.SerialNumber)
	var dev device.Device
	err = s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(tid))
		if err != nil {
			return err
		}
		rec, err := tt.Certificates().Get(ctx, serial)
		if err != nil {
			return err
		}
		if string(rec.DeviceID) != did {
			return store.ErrNotFound
		}
		dev, err = tt.Devices().Get(ctx, device.ID(did))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return device.Device{}, fmt.Errorf("%w: certificate %s of device %s is not on record for tenant %s", ErrUnauthenticated, serial, did, tid)
	}
	if err != nil {
		return device.Device{}, err
	}
	if dev.Blocked {
		return device.Device{}, fmt.Errorf("%w: device %s is blocked", ErrUnauthenticated, did)
	}
	return dev, nil
}
