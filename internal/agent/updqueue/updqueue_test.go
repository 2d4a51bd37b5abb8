package updqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/updqueue"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/internal/updstate"
)

var at = time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)

// report returns the i-th step of an update, a second apart; every third is a download
// progress report.
func report(i int) updstate.Report {
	t := at.Add(time.Duration(i) * time.Second)
	r := updstate.Report{ID: errreport.NewID(t), At: t, State: updstate.Assigned, Kind: updstate.KindApp, Target: "apps/dw100-app/2.0.0"}
	if i%3 == 1 {
		r.State, r.BytesDone, r.BytesTotal = updstate.Downloading, int64(i), 1000
	}
	return r
}

func reports(from, to int) []updstate.Report {
	var out []updstate.Report
	for i := from; i < to; i++ {
		out = append(out, report(i))
	}
	return out
}

func ids(rs []updstate.Report) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func open(t *testing.T, dir string, max int) *updqueue.Queue {
	t.Helper()
	q, err := updqueue.Open(updqueue.Config{Dir: dir, MaxReports: max})
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	return q
}

func put(t *testing.T, q *updqueue.Queue, rs ...updstate.Report) {
	t.Helper()
	for _, r := range rs {
		if err := q.Put(r); err != nil {
			t.Fatalf("Put(%s) = %v", r.ID, err)
		}
	}
}

func pending(t *testing.T, q *updqueue.Queue) []string {
	t.Helper()
	rs, err := q.Pending()
	if err != nil {
		t.Fatalf("Pending = %v", err)
	}
	return ids(rs)
}

// TestDeps: the queue runs on the device; it links no server-side package (STYLE, Layout).
func TestDeps(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, banned := range []string{"/internal/server", "/internal/fleet", "/internal/api", "/internal/store", "/internal/cli",
			"/internal/repo", "/internal/deviceca", "/internal/testenv"} {
			if strings.HasPrefix(dep, "github.com/moat-iot/moat"+banned) {
				t.Errorf("updqueue links %s", dep)
			}
		}
	}
}

func TestPut_RefusesInvalidAndKeepsOrder(t *testing.T) {
	t.Parallel()
	q := open(t, t.TempDir(), 0)
	bad := report(0)
	bad.Message = "not on an assigned report"
	if err := q.Put(bad); err == nil {
		t.Error("Put(invalid report) = nil, want an error")
	}
	rs := reports(0, 5)
	put(t, q, rs[3], rs[0], rs[4], rs[1], rs[2], rs[0])
	if d := cmp.Diff(ids(rs), pending(t, q)); d != "" {
		t.Errorf("Pending (-want +got):\n%s", d)
	}
}

// TestOpen_SurvivesRestartAndCrash: what Put returned for is there after a restart; what a
// crash left half-written, or garbage, is removed.
func TestOpen_SurvivesRestartAndCrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := open(t, dir, 0)
	rs := reports(0, 4)
	put(t, q, rs...)
	if err := q.Ack([]string{rs[1].ID}); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		".tmp-123": `{"id":`, // a write the crash cut short
		"20250607T080910.000000000Z-01JXA7Q3ZK4M9V6T2B8R5N1C0E.json": "garbage",
		"20990101T000000.000000000Z-01JXA7Q3ZK4M9V6T2B8R5N1C0E.json": mustJSON(t, rs[0]), // not the report its name says
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	again := open(t, dir, 0)
	if d := cmp.Diff([]string{rs[0].ID, rs[2].ID, rs[3].ID}, pending(t, again)); d != "" {
		t.Errorf("after restart (-want +got):\n%s", d)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 3 {
		t.Errorf("queue dir holds %d files after Open, want the 3 reports", len(files))
	}
}

func mustJSON(t *testing.T, r updstate.Report) string {
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBounds_DropsProgressFirst: a full queue drops the oldest download-progress report
// before any step that is not superseded.
func TestBounds_DropsProgressFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := open(t, dir, 4)
	rs := reports(0, 6) // 1 and 4 are progress
	put(t, q, rs...)
	want := []string{rs[0].ID, rs[2].ID, rs[3].ID, rs[5].ID}
	if d := cmp.Diff(want, pending(t, q)); d != "" {
		t.Errorf("Pending (-want +got):\n%s", d)
	}
	put(t, q, report(6))
	if got := pending(t, q); len(got) != 4 || got[0] != rs[2].ID {
		t.Errorf("Pending = %v, want the oldest dropped once no progress is left", got)
	}
	// A smaller bound on the next start.
	if got := pending(t, open(t, dir, 2)); len(got) != 2 {
		t.Errorf("reopened with MaxReports 2: %d reports", len(got))
	}
}

// link is the device's connection to the server with a fault knob.
type link struct {
	base http.RoundTripper
	down atomic.Bool
}

func (l *link) RoundTrip(req *http.Request) (*http.Response, error) {
	if l.down.Load() {
		return nil, errors.New("network is unreachable")
	}
	return l.base.RoundTrip(req)
}

// TestSend_ServerDownThenUp (ATTACKS row 35 for update states): reports queued while the
// server is unreachable, across a restart of the agent, all reach it once it is back,
// each stored once, and the queue is empty.
func TestSend_ServerDownThenUp(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	d := p.NewDevice(true, "DW100/Production")
	cert, err := p.Attest(d, osImg.Measurement(), app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	hc := p.DeviceHTTPClient(cert)
	l := &link{base: hc.Transport}
	hc.Transport = l
	c, err := client.New(p.Server.DeviceURL, client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	q := open(t, dir, 0)
	l.down.Store(true)
	rs := reports(0, updstate.MaxBatch+20) // more than one batch
	put(t, q, rs[:50]...)
	if n, err := q.Send(t.Context(), c); err == nil || n != 0 {
		t.Errorf("Send while down = %d, %v; want 0 and an error", n, err)
	}
	q = open(t, dir, 0) // the agent restarts, still offline
	put(t, q, rs[50:]...)
	l.down.Store(false)
	if n, err := q.Send(t.Context(), c); err != nil || n != len(rs) {
		t.Fatalf("Send once up = %d, %v; want %d", n, err, len(rs))
	}
	if q.Len() != 0 {
		t.Errorf("queue holds %d after delivery, want 0", q.Len())
	}
	// A resend of what the server holds changes nothing.
	put(t, q, rs[0])
	if _, err := q.Send(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	got, err := client.Collect(t.Context(), client.ListOptions{Limit: 1000}, func(ctx context.Context, o client.ListOptions) (client.Page[client.UpdateStateRecord], error) {
		return p.Admin.ListUpdateStates(ctx, p.Tenant, d.ID, o)
	})
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, r := range got {
		gotIDs = append(gotIDs, r.Report.ID)
	}
	want := ids(rs)
	slices.Sort(gotIDs)
	slices.Sort(want)
	if d := cmp.Diff(want, gotIDs); d != "" {
		t.Errorf("stored on the server (-want +got):\n%s", d)
	}
}

// TestToWire: the client's wire type carries every field (the same JSON).
func TestToWire(t *testing.T) {
	t.Parallel()
	until := at.Add(time.Hour)
	r := updstate.Report{ID: errreport.NewID(at), At: at, State: updstate.Deferred, Kind: updstate.KindOS, Target: "os/moat-os/2",
		Version: "2", Code: "busy", Message: "washing", DeferredUntil: &until}
	want, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(updqueue.ToWire(r))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("ToWire JSON = %s, want %s", got, want)
	}
	dl := report(1)
	want, _ = json.Marshal(dl)
	got, _ = json.Marshal(updqueue.ToWire(dl))
	if string(got) != string(want) {
		t.Errorf("ToWire JSON = %s, want %s", got, want)
	}
}
