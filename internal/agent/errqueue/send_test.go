package errqueue_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/errqueue"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/testenv"
)

// Link modes of the device's connection to the server.
const (
	linkUp       = iota
	linkDown     // the request never reaches the server
	linkLoseAck  // the server gets the request; its answer is lost
	linkRefuse1  // a server that refuses the batch's second report as invalid, once
	linkRefuse1s // a server that refuses the batch's second report as invalid, always
)

// link is the device's connection: a real mutual-TLS transport with a fault knob.
type link struct {
	base     http.RoundTripper
	mode     atomic.Int32
	requests atomic.Int32
}

var errLinkDown = errors.New("network is unreachable")

func (l *link) RoundTrip(req *http.Request) (*http.Response, error) {
	l.requests.Add(1)
	switch l.mode.Load() {
	case linkDown:
		return nil, errLinkDown
	case linkLoseAck:
		res, err := l.base.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		return nil, errors.New("connection reset by peer")
	case linkRefuse1, linkRefuse1s:
		if l.mode.Load() == linkRefuse1 {
			l.mode.Store(linkUp)
		}
		io.Copy(io.Discard, req.Body)
		body := `{"type":"urn:moat:problem:invalid_kind","title":"Bad Request","status":400,"code":"invalid_kind",` +
			`"detail":"report: kind must be one of ...","field":"reports[1].kind"}`
		return &http.Response{StatusCode: 400, Header: http.Header{"Content-Type": {"application/problem+json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
	}
	return l.base.RoundTrip(req)
}

// device is an attested device of a real platform, with its queue's link to the server.
type device struct {
	p    *testenv.Platform
	id   string
	link *link
	c    *client.Client // the device API client over link
}

func newDevice(t *testing.T) *device {
	t.Helper()
	p := testenv.NewPlatform(t)
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	d := p.NewDevice(true, "DW100/Production")
	cert, err := p.Attest(d, osImg.Measurement(), app.Measurement())
	if err != nil {
		t.Fatalf("Attest = %v", err)
	}
	hc := p.DeviceHTTPClient(cert)
	l := &link{base: hc.Transport}
	hc.Transport = l
	c, err := client.New(p.Server.DeviceURL, client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	return &device{p: p, id: d.ID, link: l, c: c}
}

// stored lists what the server holds for the device, as the tenant's administrator.
func (d *device) stored(t *testing.T) []client.ErrorReportRecord {
	t.Helper()
	recs, err := client.Collect(t.Context(), client.ListOptions{Limit: 1000}, func(ctx context.Context, o client.ListOptions) (client.Page[client.ErrorReportRecord], error) {
		return d.p.Admin.ListErrorReports(ctx, d.p.Tenant, d.id, o)
	})
	if err != nil {
		t.Fatalf("ListErrorReports = %v", err)
	}
	return recs
}

// storedOnce fails unless the server holds exactly the reports with these IDs, each once.
func (d *device) storedOnce(t *testing.T, want []string) {
	t.Helper()
	var got []string
	for _, r := range d.stored(t) {
		got = append(got, r.Report.ID)
	}
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reports on the server (-want +got):\n%s", d)
	}
}

func (d *device) send(t *testing.T, q *errqueue.Queue) int {
	t.Helper()
	n, err := q.Send(t.Context(), d.c)
	if err != nil {
		t.Fatalf("Send = %d, %v", n, err)
	}
	return n
}

func mixed(n int) []errreport.Report {
	rs := make([]errreport.Report, n)
	for i := range rs {
		rs[i] = report(i)
		switch i % 4 {
		case 1:
			rs[i].Kind, rs[i].ExitCode, rs[i].UptimeSeconds, rs[i].StderrTail = errreport.UpdateFailed, nil, 0, ""
			rs[i].Step, rs[i].Target, rs[i].Code = errreport.StepHealth, "apps/dw100-app/2.0.0", "health_timeout"
		case 2:
			rs[i].Kind, rs[i].ExitCode, rs[i].UptimeSeconds, rs[i].StderrTail, rs[i].Capability = errreport.CapabilityDenied, nil, 0, "", "host:evil.example:443"
		case 3:
			rs[i].Kind, rs[i].ExitCode, rs[i].UptimeSeconds, rs[i].StderrTail, rs[i].ImagePath = errreport.AttestationRefused, nil, 0, "", ""
		}
	}
	return rs
}

// TestSend_UploadsAndDeletes: a device's queue reaches a real server over mutual TLS in
// batches of at most 100, every field intact, and is empty afterwards.
func TestSend_UploadsAndDeletes(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	q := mustOpen(t, config(t, t.TempDir()))
	rs := mixed(250)
	mustPut(t, q, rs...)
	if n := d.send(t, q); n != 250 {
		t.Errorf("Send = %d, want 250", n)
	}
	if got := d.link.requests.Load(); got != 3 {
		t.Errorf("Send made %d requests, want 3 batches", got)
	}
	if s := q.Stats(); s.Reports != 0 {
		t.Errorf("Stats() after Send = %+v, want an empty queue", s)
	}
	recs := d.stored(t)
	byID := map[string]client.ErrorReport{}
	for _, r := range recs {
		if r.DeviceID != d.id {
			t.Errorf("report %s stored for device %s, want %s", r.Report.ID, r.DeviceID, d.id)
		}
		byID[r.Report.ID] = r.Report
	}
	for _, r := range rs {
		if d := cmp.Diff(errqueue.ToWire(r), byID[r.ID]); d != "" {
			t.Errorf("report %s on the server (-sent +stored):\n%s", r.ID, d)
		}
	}
	if n := d.send(t, q); n != 0 {
		t.Errorf("Send of an empty queue = %d", n)
	}
}

// TestSend_ServerDownThenUp (ATTACKS row 35): while the server cannot be reached, reports
// accumulate and nothing is lost; once it is back, each arrives exactly once.
func TestSend_ServerDownThenUp(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	cfg := config(t, t.TempDir())
	q := mustOpen(t, cfg)
	d.link.mode.Store(linkDown)
	rs := mixed(30)
	for i, r := range rs {
		mustPut(t, q, r)
		if i%10 == 9 {
			if n, err := q.Send(t.Context(), d.c); !errors.Is(err, errLinkDown) || n != 0 {
				t.Fatalf("Send while down = %d, %v; want 0 and the network error", n, err)
			}
		}
	}
	if s := q.Stats(); s.Reports != 30 {
		t.Errorf("Stats() while down = %+v, want 30 reports", s)
	}
	q = mustOpen(t, cfg) // and a reboot while offline
	d.link.mode.Store(linkUp)
	if n := d.send(t, q); n != 30 {
		t.Errorf("Send = %d, want 30", n)
	}
	d.storedOnce(t, ids(rs))
	if n := d.send(t, q); n != 0 {
		t.Errorf("second Send = %d, want 0", n)
	}
	d.storedOnce(t, ids(rs))
}

// TestSend_LostAnswerIsSentAgainStoredOnce: the server stored a batch but its answer was
// lost; the queue keeps the reports and sends them again, and the server keeps one copy.
func TestSend_LostAnswerIsSentAgainStoredOnce(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	q := mustOpen(t, config(t, t.TempDir()))
	rs := mixed(120)
	mustPut(t, q, rs...)
	d.link.mode.Store(linkLoseAck)
	if _, err := q.Send(t.Context(), d.c); err == nil {
		t.Fatal("Send with a lost answer = nil error")
	}
	if s := q.Stats(); s.Reports != 120 {
		t.Errorf("Stats() after a lost answer = %+v, want all 120 still queued", s)
	}
	d.storedOnce(t, ids(rs[:100])) // the first batch arrived
	d.link.mode.Store(linkUp)
	if n := d.send(t, q); n != 120 {
		t.Errorf("Send = %d, want 120 (the first 100 acknowledged again)", n)
	}
	d.storedOnce(t, ids(rs))
}

// TestSend_CrashBetweenUploadAndDelete: the power fails after the server acknowledged a
// batch and before the files are deleted; after the reboot the batch is sent again and
// stored once.
func TestSend_CrashBetweenUploadAndDelete(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	cfg := config(t, t.TempDir())
	rs := mixed(150)
	mustPut(t, mustOpen(t, cfg), rs...)
	for _, cut := range []int{0, 1, 60} { // at the first, second and a later delete of the first batch
		p := &power{k: 1 << 30}
		removes := 0
		q, err := errqueue.OpenFaulty(cfg, func(op string) error {
			if op == "remove" {
				if removes == cut {
					p.k = p.n
				}
				removes++
			}
			return p.fault(op)
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Send(t.Context(), d.c); !errors.Is(err, errPowerCut) {
			t.Fatalf("cut at delete %d: Send = %v, want the power cut", cut, err)
		}
	}
	q := mustOpen(t, cfg) // the reboot
	if s := q.Stats(); s.Reports < 50 {
		t.Errorf("Stats() after the cuts = %+v, want at least the second batch still queued", s)
	}
	d.send(t, q)
	d.storedOnce(t, ids(rs))
	if s := q.Stats(); s.Reports != 0 {
		t.Errorf("Stats() after Send = %+v, want an empty queue", s)
	}
}

// TestSend_DropReportReachesServer: a device offline long enough to fill its queue tells
// the server how many reports it dropped.
func TestSend_DropReportReachesServer(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	cfg := config(t, t.TempDir())
	cfg.MaxReports = 20
	q := mustOpen(t, cfg)
	d.link.mode.Store(linkDown)
	rs := mixed(50)
	mustPut(t, q, rs...)
	q.Send(t.Context(), d.c)
	d.link.mode.Store(linkUp)
	d.send(t, q)
	var kept []string
	var dropped int64
	for _, r := range d.stored(t) {
		if r.Report.Code == errreport.CodeQueueFull {
			dropped += r.Report.Dropped
			continue
		}
		kept = append(kept, r.Report.ID)
	}
	if dropped != 31 {
		t.Errorf("server holds a drop count of %d, want 31", dropped)
	}
	slices.Sort(kept)
	want := ids(rs[31:])
	slices.Sort(want)
	if d := cmp.Diff(want, kept); d != "" {
		t.Errorf("reports on the server (-want the newest 19 +got):\n%s", d)
	}
}

// TestSend_RefusedReportMovedAside: a report the server refuses as invalid (a server older
// than the agent, say) is moved aside and reported; it does not block the rest.
func TestSend_RefusedReportMovedAside(t *testing.T) {
	t.Parallel()
	d := newDevice(t)
	cfg := config(t, t.TempDir())
	q := mustOpen(t, cfg)
	rs := mixed(5)
	mustPut(t, q, rs...)
	d.link.mode.Store(linkRefuse1)
	if n := d.send(t, q); n != 5 {
		t.Errorf("Send = %d, want 5 (4 reports and the agent's report of the refusal)", n)
	}
	var got []string
	var rejected []client.ErrorReport
	for _, r := range d.stored(t) {
		if r.Report.Code == errreport.CodeReportRejected {
			rejected = append(rejected, r.Report)
			continue
		}
		got = append(got, r.Report.ID)
	}
	want := append(ids(rs[:1]), ids(rs[2:])...)
	slices.Sort(got)
	slices.Sort(want)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reports on the server (-want +got):\n%s", d)
	}
	if len(rejected) != 1 || !strings.Contains(rejected[0].Message, rs[1].ID) || !strings.Contains(rejected[0].Message, "invalid_kind") {
		t.Errorf("report_rejected reports %+v, want one naming %s and the server's code", rejected, rs[1].ID)
	}
	aside, _ := os.ReadDir(filepath.Join(cfg.Dir, errqueue.CorruptDir))
	if len(aside) != 1 || !strings.Contains(aside[0].Name(), rs[1].ID) {
		t.Errorf("corrupt/ holds %v, want the refused report", aside)
	}

	// A server that refuses every batch's second report: each Send still ends.
	mustPut(t, q, mixed(3)...)
	d.link.mode.Store(linkRefuse1s)
	if _, err := q.Send(t.Context(), d.c); err != nil && !strings.Contains(err.Error(), "invalid_kind") {
		t.Errorf("Send against a refusing server = %v", err)
	}
}
