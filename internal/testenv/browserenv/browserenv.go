// Package browserenv starts the headless Chromium of the browser tests (the console, the
// owners' portal, the support view). It is its own package so that tests without a browser
// do not link chromedp.
package browserenv

import (
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
)

// Chromium finds Debian's chromium (or MOAT_CHROMIUM). Without it the browser tests skip
// locally and fail under CI=true: scripts/test.sh installs it.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MOAT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found (set MOAT_CHROMIUM or install Debian's chromium; scripts/test.sh does)")
	}
	t.Skip("chromium not found; install Debian's chromium or set MOAT_CHROMIUM (under CI=true this fails)")
	return ""
}

// Options are the allocator options of a headless Chromium with a width×height window and
// a fresh profile. It ignores certificate errors: this browser only, in this test, against
// a loopback test server.
func Options(t testing.TB, width, height int) []chromedp.ExecAllocatorOption {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Chromium(t)),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.IgnoreCertErrors,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	}
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to sandbox as root
	}
	return opts
}
