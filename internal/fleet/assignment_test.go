package fleet_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/blob/fsblob"
	"github.com/moat-iot/moat/internal/device"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/fleet/assign"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
)

// TestAssignment_TakesThePolicy: the director asks Config.Policy what a device runs (the
// seam rollouts plug into); without one it assigns the group's OS and deployed app, a
// policy that holds the app back assigns the OS only, and a policy that chooses an image
// the catalog does not list (revoked) gets nothing assigned for it (DESIGN rule 2).
func TestAssignment_TakesThePolicy(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	st := f.Server.Store()
	var dev device.Device
	err := st.InReadTx(ctx, func(tx store.Tx) error {
		var err error
		dev, err = tx.Devices().Get(ctx, device.ID(d.ID))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	revoked := repo.Image{Path: "apps/dw100-app/0.9.0", Kind: "app", SHA256: f.app.SHA256}
	for _, tc := range []struct {
		name   string
		policy assign.Policy
		want   []string
	}{
		{"no policy", nil, []string{f.os.Path, f.app.Path}},
		{"app held back", assign.PolicyFunc(func(ctx context.Context, in assign.Input) (assign.Choice, error) {
			c, err := assign.Default.Choose(ctx, in)
			c.App = nil
			return c, err
		}), []string{f.os.Path}},
		{"revoked app chosen", assign.PolicyFunc(func(ctx context.Context, in assign.Input) (assign.Choice, error) {
			return assign.Choice{App: &revoked}, nil
		}), nil},
	} {
		svc := replicaWith(t, st, fleetsvc.Config{Policy: tc.policy})
		_, a, err := svc.Assignment(ctx, dev)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got []string
		for _, im := range a.Images {
			got = append(got, im.Path)
		}
		if len(got) != len(tc.want) || len(got) > 0 && got[0] != tc.want[0] || len(got) > 1 && got[1] != tc.want[1] {
			t.Errorf("%s: assigned %v, want %v", tc.name, got, tc.want)
		}
	}
}

// replicaWith builds a fleet service over st, as another replica would run it, with cfg's
// Policy.
func replicaWith(t *testing.T, st store.Store, cfg fleetsvc.Config) *fleetsvc.Service {
	t.Helper()
	online, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := fsblob.Open(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repo.New(st, blobs, online, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := fleetsvc.New(fleetsvc.Config{Store: st, Repo: rp, Logger: slog.New(slog.DiscardHandler), Now: time.Now,
		KEK: make([]byte, 32), Director: online, Registerer: prometheus.NewRegistry(), Policy: cfg.Policy})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}
