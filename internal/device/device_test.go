package device_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/device"
)

func TestAttestation_Running(t *testing.T) {
	t.Parallel()
	images := []device.Measurement{
		{Kind: "app", Path: "apps/dw100-app/1.2.0", Version: "1.2.0"},
		{Kind: "os", Path: "os/dw100-os/2.0.0", Version: "2.0.0"},
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		a      *device.Attestation
		want   device.Running
		wantOK bool
	}{
		{"nil", nil, device.Running{}, false},
		{"refused", &device.Attestation{At: at, Refusal: device.RefusedBelowFloor, Images: images}, device.Running{}, false},
		{"both", &device.Attestation{At: at, Images: images}, device.Running{
			OSTarget: "os/dw100-os/2.0.0", OSVersion: "2.0.0", AppTarget: "apps/dw100-app/1.2.0", AppVersion: "1.2.0",
		}, true},
		{"os only", &device.Attestation{At: at, Images: images[1:]}, device.Running{OSTarget: "os/dw100-os/2.0.0", OSVersion: "2.0.0"}, true},
		{"nothing measured", &device.Attestation{At: at, Images: []device.Measurement{}}, device.Running{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.a.Running()
			if d := cmp.Diff(tc.want, got); d != "" || ok != tc.wantOK {
				t.Errorf("Running() = %+v, %v, want %v (-want +got):\n%s", got, ok, tc.wantOK, d)
			}
		})
	}
}
