package assign_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/fleet/assign"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
)

func osImage(version string, sv uint32, feeds ...string) repo.Image {
	return repo.Image{Path: "os/dwos/" + version, Kind: director.KindOS, Name: "dwos", Version: version,
		SecurityVersion: sv, SHA256: "os" + version, Length: 10, Feeds: feeds}
}

func appImage(version string, sv uint32) repo.Image {
	return repo.Image{Path: "apps/wash/" + version, Kind: director.KindApp, Name: "wash", Version: version,
		SecurityVersion: sv, SHA256: "app" + version, Length: 20, Product: "DW100"}
}

func catalog(images ...repo.Image) *repo.Catalog {
	c := &repo.Catalog{Images: map[string]repo.Image{}}
	for _, im := range images {
		c.Images[im.Path] = im
	}
	return c
}

func input(cat *repo.Catalog, policy product.UpdatePolicy, dep *repo.Image, floors map[string]uint32) assign.Input {
	in := assign.Input{
		Device:  device.Device{ID: "d1", TenantID: "tnt_a", ProductID: "DW100", GroupID: "Production", Floors: floors},
		Group:   product.Group{OSFeed: "stable", UpdatePolicy: policy},
		Catalog: cat,
	}
	if dep != nil {
		in.Deployment = &device.Deployment{ID: "dep_1", Target: dep.Path, SHA256: dep.SHA256}
	}
	return in
}

func paths(images []director.Image) []string {
	var out []string
	for _, im := range images {
		out = append(out, im.Path)
	}
	return out
}

// TestDefault_Chooses: without a rollout, the newest OS on the group's feed at or above the
// floor, and the current deployment's app unless the group takes OS updates only or the
// catalog no longer lists the deployed image with its hash.
func TestDefault_Chooses(t *testing.T) {
	t.Parallel()
	os1, os2, os10 := osImage("1.0.0", 1, "stable"), osImage("1.2.0", 1, "stable"), osImage("1.10.0", 1, "beta")
	app := appImage("2.0.0", 3)
	revoked := appImage("1.0.0", 1) // not in the catalog
	changed := app
	changed.SHA256 = "other"
	cat := catalog(os1, os2, os10, app)
	for _, tc := range []struct {
		name string
		in   assign.Input
		want []string
	}{
		{"newest OS on the feed and the deployed app", input(cat, product.UpdateAll, &app, nil), []string{os2.Path, app.Path}},
		{"OS updates only", input(cat, product.UpdateOSOnly, &app, nil), []string{os2.Path}},
		{"no deployment", input(cat, product.UpdateAll, nil, nil), []string{os2.Path}},
		{"revoked deployment", input(cat, product.UpdateAll, &revoked, nil), []string{os2.Path}},
		{"deployment of another hash", input(cat, product.UpdateAll, &changed, nil), []string{os2.Path}},
		{"app below the floor", input(cat, product.UpdateAll, &app, map[string]uint32{"apps/wash": 4}), []string{os2.Path}},
		{"OS below the floor", input(cat, product.UpdateAll, &app, map[string]uint32{"os/dwos": 2}), []string{app.Path}},
		{"empty catalog", input(catalog(), product.UpdateAll, &app, nil), nil},
	} {
		got, err := assign.Images(context.Background(), nil, tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if diff := cmp.Diff(tc.want, paths(got)); diff != "" {
			t.Errorf("%s: assigned (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestImages_RefusesWhatThePolicyMayNotAssign attacks the seam (DESIGN rule 2): a policy
// that chooses a revoked image, an image with another hash, one below the device's floor or
// one in the wrong slot gets nothing assigned for that slot; what it may assign is
// described as the catalog lists it, not as the policy says.
func TestImages_RefusesWhatThePolicyMayNotAssign(t *testing.T) {
	t.Parallel()
	os1, app := osImage("1.0.0", 1, "stable"), appImage("2.0.0", 3)
	cat := catalog(os1, app)
	revoked := appImage("1.0.0", 1)
	forged := app
	forged.SHA256 = "forged"
	lying := os1
	lying.Length = 1 << 40
	for _, tc := range []struct {
		name   string
		choice assign.Choice
		floors map[string]uint32
		want   []director.Image
	}{
		{"revoked app", assign.Choice{App: &revoked}, nil, nil},
		{"app of another hash", assign.Choice{App: &forged}, nil, nil},
		{"app below the floor", assign.Choice{App: &app}, map[string]uint32{"apps/wash": 4}, nil},
		{"OS below the floor", assign.Choice{OS: &os1}, map[string]uint32{"os/dwos": 2}, nil},
		{"app in the OS slot", assign.Choice{OS: &app}, nil, nil},
		{"OS in the app slot", assign.Choice{App: &os1}, nil, nil},
		{"the catalog's description", assign.Choice{OS: &lying}, nil,
			[]director.Image{{Kind: director.KindOS, Path: os1.Path, SHA256: os1.SHA256, Length: 10, Version: "1.0.0", SecurityVersion: 1}}},
	} {
		p := assign.PolicyFunc(func(context.Context, assign.Input) (assign.Choice, error) { return tc.choice, nil })
		got, err := assign.Images(context.Background(), p, input(cat, product.UpdateAll, nil, tc.floors))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: assigned (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestImages_PolicyError: a policy's error is the assignment's, with nothing assigned.
func TestImages_PolicyError(t *testing.T) {
	t.Parallel()
	boom := errors.New("rollout state unavailable")
	p := assign.PolicyFunc(func(context.Context, assign.Input) (assign.Choice, error) { return assign.Choice{}, boom })
	got, err := assign.Images(context.Background(), p, input(catalog(), product.UpdateAll, nil, nil))
	if !errors.Is(err, boom) || got != nil {
		t.Errorf("Images with a failing policy = %v, %v; want nil, %v", got, err, boom)
	}
}
