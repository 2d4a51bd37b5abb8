package fleet_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/testenv"
)

// revokeSigningKeys revokes every signing key of the tenant, as its Administrator.
func (f *fleet) revokeSigningKeys(t *testing.T) {
	t.Helper()
	ks, err := f.Admin.ListSigningKeys(t.Context(), f.Tenant, client.ListOptions{})
	if err != nil || len(ks.Items) == 0 {
		t.Fatalf("ListSigningKeys = %+v, %v; want the release key", ks, err)
	}
	for _, k := range ks.Items {
		if _, err := f.Admin.RevokeSigningKey(t.Context(), f.Tenant, k.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// assignedPaths returns the image paths of the device's assignment from svc.
func assignedPaths(t *testing.T, svc *fleetsvc.Service, st store.Store, id string) []string {
	t.Helper()
	var dev device.Device
	err := st.InReadTx(t.Context(), func(tx store.Tx) error {
		var err error
		dev, err = tx.Devices().Get(t.Context(), device.ID(id))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_, a, err := svc.Assignment(t.Context(), dev)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, im := range a.Images {
		paths = append(paths, im.Path)
	}
	return paths
}

// TestRevocation_KeyRevokedRefusesAtOnce attacks defect 7 of issue 10: after a signing key
// was revoked, attestation and assignment went on approving its apps from the cached
// catalog for up to 30 s. The package doc promises a revoked key "signs nothing from the
// moment it is revoked".
func TestRevocation_KeyRevokedRefusesAtOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	good := []attest.Measurement{f.os.Measurement(), f.app.Measurement()}
	running := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(running, good...)
	if err != nil {
		t.Fatalf("attest before revocation: %v", err)
	}
	raw, err := f.DeviceClient(cert).GetAssignment(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	a, err := director.Verify(raw, f.directorKey(t), director.Expect{DeviceID: running.ID, TenantID: f.Tenant, Now: time.Now()})
	if err != nil || len(a.Images) != 2 {
		t.Fatalf("assignment before revocation = %+v, %v; want OS and app", a.Images, err)
	}

	f.revokeSigningKeys(t)

	d := f.NewDevice(true, "DW100/Production")
	f.refusal(t, "app of a revoked key", f.Evidence(d, false, good...), d, "revoked_image", true)
	raw, err = f.DeviceClient(cert).GetAssignment(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	a, err = director.Verify(raw, f.directorKey(t), director.Expect{DeviceID: running.ID, TenantID: f.Tenant, Now: time.Now()})
	if err != nil || len(a.Images) != 1 || a.Images[0].Path != f.os.Path {
		t.Errorf("assignment after revocation = %+v, %v; want the OS only, never the revoked key's app", a.Images, err)
	}
}

// replicaServer starts a second server on the database of p's server, sharing its online
// key and CA key-encryption key, as a scale-out replica does.
func replicaServer(t *testing.T, dsn, firstData string) *server.Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Database = dsn
	cfg.OnlineKey = filepath.Join(firstData, "keys", "online.key")
	cfg.CAKeyKEK = filepath.Join(firstData, "keys", "ca.kek")
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.Open(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatalf("server.Open of the second replica: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("second replica: Serve: %v", err)
		}
	})
	return s
}

// twoReplicas is a fleet on PostgreSQL with a second server replica on the same database.
func twoReplicas(t *testing.T) (*fleet, *server.Server) {
	t.Helper()
	dsn := testenv.FreshPostgresDatabase(t)
	data := t.TempDir()
	f := newFleetWith(t, testenv.WithDatabase(dsn), testenv.WithConfig(func(c *server.Config) { c.DataDir = data }))
	return f, replicaServer(t, dsn, data)
}

// TestRevocation_ReachesOtherReplicasAtOnce: a key revoked and an image revoked through one
// replica are refused at once by another that had the catalog cached.
func TestRevocation_ReachesOtherReplicasAtOnce(t *testing.T) {
	t.Parallel()
	f, b := twoReplicas(t)
	ctx := t.Context()
	good := []attest.Measurement{f.os.Measurement(), f.app.Measurement()}
	running := f.NewDevice(true, "DW100/Production")
	// Attested through B: B has the catalog cached, and its nonce came from A (replicas
	// share the nonce secret).
	if _, err := b.Fleet().Attest(ctx, f.Evidence(running, false, good...)); err != nil {
		t.Fatalf("attest through the second replica with the first's nonce: %v", err)
	}
	if got := assignedPaths(t, b.Fleet(), b.Store(), running.ID); !slices.Equal(got, []string{f.os.Path, f.app.Path}) {
		t.Fatalf("assignment through B before revocation = %v, want OS and app", got)
	}

	t.Run("image revoked", func(t *testing.T) {
		bad := f.PublishApp("dw100-app", "1.0.1", 1, "DW100")
		d := f.NewDevice(true, "DW100/Production")
		if _, err := b.Fleet().Attest(ctx, f.Evidence(d, false, f.os.Measurement(), bad.Measurement())); err != nil {
			t.Fatalf("attest through B before revocation: %v", err)
		}
		f.RevokeApp(bad.Path)
		_, err := b.Fleet().Attest(ctx, f.Evidence(d, false, f.os.Measurement(), bad.Measurement()))
		if r, ok := errors.AsType[*fleetsvc.Refusal](err); !ok || r.Reason != device.RefusedRevokedImage {
			t.Errorf("attest through B after A revoked the image = %v, want refusal %s", err, device.RefusedRevokedImage)
		}
	})
	t.Run("key revoked", func(t *testing.T) {
		f.revokeSigningKeys(t)
		d := f.NewDevice(true, "DW100/Production")
		_, err := b.Fleet().Attest(ctx, f.Evidence(d, false, good...))
		if r, ok := errors.AsType[*fleetsvc.Refusal](err); !ok || r.Reason != device.RefusedRevokedImage {
			t.Errorf("attest through B after A revoked the key = %v, want refusal %s", err, device.RefusedRevokedImage)
		}
		if got := assignedPaths(t, b.Fleet(), b.Store(), running.ID); !slices.Equal(got, []string{f.os.Path}) {
			t.Errorf("assignment through B after A revoked the key = %v, want the OS only", got)
		}
	})
}

// newFleetWith is newFleet on a server configured further by opts.
func newFleetWith(t *testing.T, opts ...testenv.ServerOption) *fleet {
	t.Helper()
	offset := new(atomic.Int64)
	opts = append(opts, testenv.WithConfig(func(c *server.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	}))
	f := &fleet{Platform: testenv.NewPlatform(t, opts...), offset: offset}
	f.os = f.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	f.app = f.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	f.deploy("Production", f.app.Path)
	return f
}
