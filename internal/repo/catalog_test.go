package repo_test

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// catalogPaths returns the sorted image paths of the tenant's catalog from svc.
func catalogPaths(t *testing.T, svc *repo.Service, id tenant.ID) []string {
	t.Helper()
	c, err := svc.Catalog(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(c.Images))
}

// TestCatalog_RevokedKeyAtOnce attacks defect 7 of issue 10: a catalog cached by one
// replica kept a revoked key's apps, and an image another replica revoked, for up to 30 s.
// Two Services over one store stand for two replicas; both had the catalog cached.
func TestCatalog_RevokedKeyAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	other, err := repo.New(f.st, f.blobs, f.online, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutRoot(ctx, f.root1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutTargets(ctx, f.tenantA, f.targets(1, &f.tenantK.PublicKey), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutApps(ctx, f.tenantA, f.apps(f.tenantK, 1, "apps/dw100-app/1.0.0", "apps/dw100-app/1.0.1"), nil); err != nil {
		t.Fatal(err)
	}
	both := []string{"apps/dw100-app/1.0.0", "apps/dw100-app/1.0.1"}
	for name, svc := range map[string]*repo.Service{"this": f.svc, "other": other} {
		if got := catalogPaths(t, svc, f.tenantA); !slices.Equal(got, both) {
			t.Fatalf("%s replica's catalog = %v, want %v", name, got, both)
		}
	}

	// An image revoked by a new apps.json through this replica.
	if _, err := f.svc.PutApps(ctx, f.tenantA, f.apps(f.tenantK, 2, "apps/dw100-app/1.0.0"), nil); err != nil {
		t.Fatal(err)
	}
	if got := catalogPaths(t, other, f.tenantA); !slices.Equal(got, both[:1]) {
		t.Errorf("other replica's catalog after an image was revoked = %v, want %v", got, both[:1])
	}

	// The signing key revoked (in the store, as any replica's API does it).
	err = f.st.InTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(f.tenantA)
		if err != nil {
			return err
		}
		_, err = tt.SigningKeys().Revoke(ctx, f.keyRecord, time.Now())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, svc := range map[string]*repo.Service{"this": f.svc, "other": other} {
		if got := catalogPaths(t, svc, f.tenantA); len(got) != 0 {
			t.Errorf("%s replica's catalog after the key was revoked = %v, want none of its apps", name, got)
		}
	}
}
