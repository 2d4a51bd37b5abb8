package cli

import (
	"strings"
	"time"

	"github.com/moat-iot/moat/client"
)

// parseWindow reads --maintenance-window "DAYS HH:MM LENGTH ZONE": DAYS comma-separated
// (mon,tue,...) or "daily", LENGTH a Go duration, ZONE an IANA name. The server checks the
// values; this checks the shape.
func parseWindow(s string) (*client.MaintenanceWindow, error) {
	f := strings.Fields(s)
	if len(f) != 4 {
		return nil, usagef(`--maintenance-window is "DAYS HH:MM LENGTH ZONE", such as "mon,tue,wed,thu,fri 02:00 3h Europe/Berlin", got %q`, s)
	}
	days := strings.Split(strings.ToLower(f[0]), ",")
	if strings.EqualFold(f[0], "daily") {
		days = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
	}
	return &client.MaintenanceWindow{Days: days, Start: f[1], Length: f[2], TimeZone: f[3]}, nil
}

// windowText is a group's window as --maintenance-window spells it, or "any time".
func windowText(w *client.MaintenanceWindow) string {
	if w == nil {
		return "any time"
	}
	return strings.Join(w.Days, ",") + " " + w.Start + " " + w.Length + " " + w.TimeZone
}

// parseDeferral reads --max-update-deferral, a Go duration of whole seconds, 0 to 168h.
func parseDeferral(s string) (int64, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > 7*24*time.Hour || d%time.Second != 0 {
		return 0, usagef("--max-update-deferral is a duration of whole seconds from 0s to 168h (7 days), such as 24h, got %q", s)
	}
	return int64(d / time.Second), nil
}

// deferralText is a product's deferral bound as a duration.
func deferralText(seconds int64) string {
	return (time.Duration(seconds) * time.Second).String()
}
