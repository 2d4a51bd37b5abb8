package sim

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"golang.org/x/time/rate"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/keys"
)

// populate makes every device batch by batch (keys, registration, one claim, group
// moves), then hands each to start at the ramp rate. The whole fleet is set up before any
// device starts: a device claimed or moved wakes the long-polls of the tenant's waiting
// devices (each then checks its assignment), so setting up devices while others wait would
// cost the server a check per waiting device per setup call. Management calls that fail
// for a passing reason (503, a lost connection) are retried with backoff; any other
// failure ends it.
func (s *Sim) populate(ctx context.Context, start func(*device)) error {
	var all []*device
	for first := 0; first < s.cfg.Devices; first += batchSize {
		batch, err := s.makeBatch(ctx, first, min(batchSize, s.cfg.Devices-first))
		if err != nil {
			return err
		}
		all = append(all, batch...)
	}
	s.log.InfoContext(ctx, "every simulated device registered, claimed and in its group", "devices", len(all))
	lim := rate.NewLimiter(rate.Limit(s.cfg.Ramp), 1)
	for _, d := range all {
		if err := lim.Wait(ctx); err != nil {
			return err
		}
		start(d)
	}
	return nil
}

// makeBatch registers n new devices, claims them in one request and moves them into the
// group.
func (s *Sim) makeBatch(ctx context.Context, first, n int) ([]*device, error) {
	batch := make([]*device, n)
	ids := make([]string, n)
	err := s.parallel(ctx, n, func(ctx context.Context, i int) error {
		k, err := keys.Generate()
		if err != nil {
			return err
		}
		d := s.newDevice(first+i, k)
		batch[i], ids[i] = d, d.id
		return s.register(ctx, k)
	})
	if err != nil {
		return nil, err
	}
	var claimed client.Claimed
	if err := retry(ctx, s, func() error {
		var err error
		claimed, err = s.mgmt.ClaimDevices(ctx, s.world.tenant, client.DeviceClaim{DeviceIDs: ids})
		return err
	}); err != nil {
		return nil, fmt.Errorf("claim devices: %w", err)
	}
	versions := make(map[string]int64, len(claimed.Devices))
	for _, d := range claimed.Devices {
		versions[d.ID] = d.Version
	}
	err = s.parallel(ctx, n, func(ctx context.Context, i int) error {
		return s.move(ctx, batch[i].id, versions[batch[i].id])
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.devices = append(s.devices, batch...)
	s.mu.Unlock()
	s.registered.Add(int64(n))
	return batch, nil
}

// register registers a device key as the factory does; a key the server already holds
// (an earlier attempt whose answer was lost) is registered.
func (s *Sim) register(ctx context.Context, k *ecdsa.PrivateKey) error {
	pemText, err := keys.EncodePublicPEM(&k.PublicKey)
	if err != nil {
		return err
	}
	return retry(ctx, s, func() error {
		d, err := s.op.RegisterDevice(ctx, client.DeviceRegister{PublicKeyPEM: string(pemText)})
		if ce, ok := errors.AsType[*client.Error](err); ok && ce.Code == "device_registered" {
			return nil
		}
		if err != nil {
			return fmt.Errorf("register device: %w", err)
		}
		if want := string(identity.IDFromPublicKey(&k.PublicKey)); d.ID != want {
			return fmt.Errorf("the server registered device %s, want %s", d.ID, want)
		}
		return nil
	})
}

// move puts a claimed device in the group; a stale version is read again.
func (s *Sim) move(ctx context.Context, id string, version int64) error {
	ref := s.world.groupRef
	return retry(ctx, s, func() error {
		if version == 0 {
			d, err := s.mgmt.GetDevice(ctx, s.world.tenant, id)
			if err != nil {
				return err
			}
			version = d.Version
		}
		_, err := s.mgmt.UpdateDevice(ctx, s.world.tenant, id, version, client.DeviceUpdate{DeviceGroup: &ref})
		if ce, ok := errors.AsType[*client.Error](err); ok && ce.Status == http.StatusPreconditionFailed {
			version = 0
			return errRetryNow
		}
		if err != nil {
			return fmt.Errorf("move device %.16s into %s: %w", id, ref, err)
		}
		return nil
	})
}

// parallel runs fn for 0..n-1 on setupWorkers goroutines and returns the first error.
func (s *Sim) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(setupWorkers, n) {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}
