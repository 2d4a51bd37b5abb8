package console_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv"
)

// BenchmarkConsole_Pages is issue 11's check that the console stays quick with a large
// fleet: with 10,000 devices of one product in the store (SQLite, spread over its groups,
// versions and states by testenv.InsertFleet), each iteration fetches, over HTTPS with
// the session cookie, the fleet overview (the should-vs-does matrix), the first page of the
// device list, its second page (by the page link the first one holds), the list of the
// product's pending devices (the status view), and, as the baseline, the management API's
// own first page of 50 devices with a bearer token. It reports each page's time and its
// ratio to the baseline (x_api).
func BenchmarkConsole_Pages(b *testing.B) {
	p := testenv.NewPlatform(b)
	ctx := context.Background()
	const devices = 10000
	p.InsertFleet(b, devices, "sqlite")

	br := newBrowser(b, p.Server)
	br.signIn(adminToken(b, p))
	base := "/ui/t/" + p.Tenant
	first := br.get(base + "/devices")
	if first.status != http.StatusOK {
		b.Fatalf("GET %s/devices = %d: %s", base, first.status, first.body)
	}
	next := regexp.MustCompile(`href="([^"]+)" id="next-page"`).FindStringSubmatch(first.body)
	if next == nil {
		b.Fatalf("the first page of %d devices links no next page: %s", devices, first.body)
	}
	second := strings.ReplaceAll(next[1], "&amp;", "&")
	pages := []struct{ name, path string }{
		{"overview", base + "/"},
		{"devices", base + "/devices"},
		{"devices_page2", second},
		{"pending", base + "/devices?" + url.Values{"product": {"DW100"}, "state": {"pending"}}.Encode()},
	}
	for _, pg := range pages {
		if got := br.get(pg.path); got.status != http.StatusOK {
			b.Fatalf("GET %s = %d: %s", pg.path, got.status, got.body)
		}
	}
	api := func() {
		if _, err := p.Admin.ListDevices(ctx, p.Tenant, client.ListOptions{Limit: 50}); err != nil {
			b.Fatal(err)
		}
	}

	times := make([]time.Duration, len(pages))
	var apiTime time.Duration
	rounds := 0
	for b.Loop() {
		t0 := time.Now()
		api()
		apiTime += time.Since(t0)
		for i, pg := range pages {
			t0 := time.Now()
			br.get(pg.path)
			times[i] += time.Since(t0)
		}
		rounds++
	}
	perAPI := float64(apiTime.Nanoseconds()) / float64(rounds)
	b.ReportMetric(perAPI, "api_ns/op")
	for i, pg := range pages {
		per := float64(times[i].Nanoseconds()) / float64(rounds)
		b.ReportMetric(per, pg.name+"_ns/op")
		b.ReportMetric(per/perAPI, pg.name+"_x_api")
	}
}
