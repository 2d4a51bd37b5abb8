package agent_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestAgent_FrozenRepositoryIsReportedAsStale is ATTACKS row 11 (indefinite freeze): the
// service keeps serving the same TUF metadata while time passes (its clock and the
// device's move a day and an hour on; the server's timestamp re-signing does not run in
// between). The device refuses the expired timestamp, installs nothing, and its report
// says "stale metadata" (code stale_metadata) as the server stores it.
func TestAgent_FrozenRepositoryIsReportedAsStale(t *testing.T) {
	t.Parallel()
	offset := new(atomic.Int64)
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	p := testenv.NewPlatform(t, testenv.WithConfig(func(c *server.Config) { c.Now = now }))
	f := &fleet{Platform: p}
	f.os = p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	f.app = p.PublishAppWith("dw100-app", "1.0.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(f.app.Path)
	d := f.NewDevice(true, "DW100/Production")
	cfg := f.agentConfig(t, d, t.TempDir())
	cfg.Now = now
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	offset.Store(int64(25 * time.Hour)) // past the timestamp's 24 hours; nothing re-signed it
	a.Nudge()
	dv := &device{Device: d}
	eventually(t, "the device reports stale metadata", func() (bool, string) {
		rs := f.reports(t, dv)
		return hasReport(rs, func(r errreport.Report) bool {
			return r.Kind == errreport.UpdateFailed && r.Step == errreport.StepVerify && r.Code == "stale_metadata"
		}), kinds(rs)
	})
}
