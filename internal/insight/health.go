package insight

import (
	"context"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Windows of version health.
const (
	DefaultWindow = 7 * 24 * time.Hour
	// MaxWindow is the default report retention: a longer window would count reports that
	// are gone.
	MaxWindow = 90 * 24 * time.Hour
	MinWindow = time.Hour
)

// HealthQuery selects what Health computes.
type HealthQuery struct {
	// ProductID, when set, counts only devices of this product (and their reports).
	ProductID product.ID
	// Window is how far back from Now the figures reach (DefaultWindow when 0).
	Window time.Duration
	// Now is the end of the window.
	Now time.Time
}

// VersionHealth is the health of one image version over a window: the rollout gate's
// inputs. The formulas are in docs/error-reports.md, "Version health".
type VersionHealth struct {
	// Kind is os or app.
	Kind    string `json:"kind"`
	Target  string `json:"target"`
	Version string `json:"version"`
	// Devices counts the devices whose last successful attestation shows this version.
	Devices int `json:"devices"`
	// CrashedDevices counts those of them with at least one app_crash attributed to the
	// version in the window.
	CrashedDevices int `json:"crashed_devices"`
	// CrashFreePercent is 100 × (Devices − CrashedDevices) / Devices; absent when no
	// device runs the version.
	CrashFreePercent *float64 `json:"crash_free_percent,omitempty"`
	// Crashes counts the app_crash reports attributed to the version in the window.
	Crashes int `json:"crashes"`
	// DeviceHours is the running devices' runtime on the version within the window.
	DeviceHours float64 `json:"device_hours"`
	// CrashesPerDeviceHour is Crashes / DeviceHours; absent when DeviceHours is 0.
	CrashesPerDeviceHour *float64 `json:"crashes_per_device_hour,omitempty"`
}

// HealthReport is the health of every version of a tenant over one window.
type HealthReport struct {
	ProductID product.ID `json:"product_id,omitempty"`
	// From and Until bound the window; Window is its length as a Go duration ("168h0m0s").
	From   time.Time `json:"from"`
	Until  time.Time `json:"until"`
	Window string    `json:"window"`
	// Versions lists the OS versions, then the app versions, each by target and version.
	Versions []VersionHealth `json:"versions"`
}

// ParseWindow reads a window as a Go duration ("168h"); empty is DefaultWindow.
func ParseWindow(s string) (time.Duration, error) {
	if s == "" {
		return DefaultWindow, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < MinWindow || d > MaxWindow {
		return 0, &problem.Error{Kind: problem.Invalid, Code: "invalid_window", Field: "window",
			Detail: fmt.Sprintf("window must be a duration from %s to %s, such as 168h", MinWindow, MaxWindow)}
	}
	return d, nil
}

// Health computes the health of each OS and app version the tenant's devices run, or that
// app crashes in the window name, over [Now − Window, Now), in one read transaction.
func Health(ctx context.Context, st store.Store, t tenant.ID, q HealthQuery) (HealthReport, error) {
	if q.Window == 0 {
		q.Window = DefaultWindow
	}
	until := q.Now.UTC()
	from := until.Add(-q.Window)
	out := HealthReport{ProductID: q.ProductID, From: from, Until: until, Window: q.Window.String(), Versions: []VersionHealth{}}
	err := st.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		out.Versions = out.Versions[:0]
		for _, kind := range []string{attest.KindOS, attest.KindApp} {
			figs, err := tt.ErrorReports().VersionFigures(ctx, store.FiguresQuery{Kind: kind, ProductID: q.ProductID, From: from, Until: until})
			if err != nil {
				return err
			}
			for _, f := range figs {
				out.Versions = append(out.Versions, versionHealth(kind, f))
			}
		}
		return nil
	})
	return out, err
}

// versionHealth applies the formulas of docs/error-reports.md, "Version health".
func versionHealth(kind string, f store.VersionFigures) VersionHealth {
	h := VersionHealth{Kind: kind, Target: f.Target, Version: f.Version, Devices: f.Running, CrashedDevices: f.CrashedRunning,
		Crashes: f.Crashes, DeviceHours: f.DeviceHours}
	if f.Running > 0 {
		p := 100 * float64(f.Running-f.CrashedRunning) / float64(f.Running)
		h.CrashFreePercent = &p
	}
	if f.DeviceHours > 0 {
		r := float64(f.Crashes) / f.DeviceHours
		h.CrashesPerDeviceHour = &r
	}
	return h
}
