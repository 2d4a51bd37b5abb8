package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/agent/netproxy"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/agent/sandbox"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/image"
)

// Restart backoff of a crashing committed app; a run longer than stableRun resets it.
const (
	minRestart = time.Second
	maxRestart = time.Minute
	stableRun  = 5 * time.Minute
)

// superviseApp runs the app slot the boot package verifies before every start, restarts it
// when it exits, commits a new one once it reported healthy, and lets a new one that
// crashes or stays silent use up its tries (boot.VerifyApp then falls back to the previous
// slot and marks the new one bad).
func (a *Agent) superviseApp(ctx context.Context, first *boot.Choice) {
	backoff := minRestart
	for ctx.Err() == nil {
		var c boot.Choice
		var rejected []boot.Rejection
		var err error
		var before boot.Record
		if first != nil {
			c, first = *first, nil
		} else {
			before, _ = a.slots.Record()
			c, rejected, err = a.slots.VerifyApp()
			a.reportRollback(image.KindApp, before, c)
		}
		for _, r := range rejected {
			a.report(rejectedReport(before, r, errreport.StepHealth, "app_rolled_back"))
			a.log.WarnContext(ctx, "app slot rejected", "slot", r.Slot, "err", r.Err)
		}
		if err != nil {
			if !errors.Is(err, boot.ErrNoImage) {
				a.log.ErrorContext(ctx, "no app to run", "err", err)
			}
			select { // wait for an install
			case <-ctx.Done():
			case <-a.appKick:
			}
			continue
		}
		a.mu.Lock()
		a.booted.app = c
		a.mu.Unlock()
		start := time.Now()
		out := a.runApp(ctx, c)
		switch {
		case out.kicked || ctx.Err() != nil:
			backoff = minRestart
			continue
		case out.committed:
			backoff = minRestart
		}
		if time.Since(start) > stableRun {
			backoff = minRestart
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-a.appKick:
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, maxRestart)
	}
}

// appOutcome is how one run of the app ended.
type appOutcome struct {
	kicked    bool // a new app was installed: stopped to switch
	committed bool // a trial app proved healthy and was committed
}

// runApp runs one start of the app in c until it exits, a new app is installed, or ctx
// ends. A trial app must report healthy within HealthTimeout.
func (a *Agent) runApp(ctx context.Context, c boot.Choice) appOutcome {
	var out appOutcome
	appCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	caps := image.Capabilities{}
	if c.Manifest.App != nil {
		caps = c.Manifest.App.Capabilities
	}
	srv, err := periph.New(periph.Config{
		Capabilities: caps, Backend: a.cfg.Backend, Now: a.cfg.Now, Logger: a.log,
		Denied:    func(capability string) { a.denied(c, capability) },
		Telemetry: a.telemetry,
		Updates:   a.deferral,
	})
	if err != nil {
		a.log.ErrorContext(ctx, "peripheral server", "err", err)
		return out
	}
	a.setApp(srv)
	defer a.setApp(nil)
	runDir := filepath.Join(a.cfg.StateDir, "run")
	var cred *sandbox.Credential
	uid, gid := -1, -1
	if a.sandboxed() {
		cred = &sandbox.Credential{UID: uint32(a.cfg.AppUID), GID: uint32(a.cfg.AppGID)} //nolint:gosec // G115: Config.Validate bounds both to 0..2^31-1
		uid, gid = a.cfg.AppUID, a.cfg.AppGID
	}
	if err := sandbox.MakeRunDir(runDir, cred); err != nil {
		a.log.ErrorContext(ctx, "run directory", "err", err)
		return out
	}
	sock := filepath.Join(runDir, "app.sock")
	l, err := periph.Listen(sock, uid, gid)
	if err != nil {
		a.log.ErrorContext(ctx, "app socket", "err", err)
		return out
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(appCtx, l); err != nil {
			a.log.ErrorContext(ctx, "peripheral server stopped", "err", err)
		}
	}()
	defer func() { cancel(); <-served }()

	// The app's network: a proxy that reaches only the hosts its manifest declares.
	pcfg := netproxy.DefaultConfig()
	pcfg.AllowedHosts, pcfg.Logger = caps.AllowedHosts, a.log
	pcfg.Denied = func(capability string) { a.denied(c, capability) }
	proxy, err := netproxy.New(pcfg)
	if err != nil {
		a.log.ErrorContext(ctx, "app network proxy", "err", err)
		return out
	}
	var p *appProcess
	if a.sandboxed() {
		// The sandbox serves the proxy inside the app's network namespace: its only way out.
		p, err = a.startSandboxed(appCtx, c, sock, proxy)
	} else {
		pl, lerr := new(net.ListenConfig).Listen(appCtx, "tcp", "127.0.0.1:0")
		if lerr != nil {
			a.log.ErrorContext(ctx, "app network proxy", "err", lerr)
			return out
		}
		proxied := make(chan struct{})
		go func() {
			defer close(proxied)
			if err := proxy.Serve(appCtx, pl); err != nil && appCtx.Err() == nil {
				a.log.ErrorContext(ctx, "app network proxy stopped", "err", err)
			}
		}()
		defer func() { cancel(); <-proxied }()
		// Once per agent: the mode does not change while it runs, and a warning at every
		// app start drowned the rest of the log.
		a.noSandboxOnce.Do(func() { a.log.WarnContext(ctx, NoSandboxWarning) })
		p, err = a.startApp(c, sock, "http://"+pl.Addr().String())
	}
	if err != nil {
		a.report(errreport.Report{Kind: errreport.AppCrash, ImagePath: c.Image.Path, ImageVersion: c.Image.Version,
			Code: "start_failed", Message: clip(err.Error())})
		return out
	}
	a.log.InfoContext(ctx, "app started", "target", c.Image.Path, "trial", c.Trial)
	if c.Trial {
		a.step("trial")
	}
	healthy := make(chan error, 1)
	if c.Trial {
		go func() {
			hctx, hcancel := context.WithTimeout(appCtx, a.cfg.HealthTimeout)
			defer hcancel()
			healthy <- srv.WaitHealthy(hctx)
		}()
	}
	for {
		select {
		case err := <-healthy:
			if err == nil {
				if cerr := a.commit(image.KindApp); cerr != nil {
					a.log.ErrorContext(ctx, "commit app", "err", cerr)
				} else {
					out.committed = true
					a.reattest()
				}
				continue
			}
			if appCtx.Err() != nil {
				continue // stopping anyway
			}
			a.report(errreport.Report{Kind: errreport.UpdateFailed, Step: errreport.StepHealth, Code: "not_healthy",
				Target: c.Image.Path, Message: fmt.Sprintf("the new app did not report healthy within %s", a.cfg.HealthTimeout)})
			p.stop()
			<-p.done
			return out
		case <-a.appKick:
			out.kicked = true
			p.stop()
			<-p.done
			return out
		case <-ctx.Done():
			p.stop()
			<-p.done
			return out
		case <-p.done:
			a.crashed(c, p)
			return out
		}
	}
}

// crashed reports an app that exited while it should have run.
func (a *Agent) crashed(c boot.Choice, p *appProcess) {
	r := errreport.Report{Kind: errreport.AppCrash, ImagePath: c.Image.Path, ImageVersion: c.Image.Version,
		UptimeSeconds: int64(p.uptime().Seconds()), StderrTail: errreport.Tail(p.stderr.Bytes())}
	if sig := p.signal(); sig != "" {
		r.Signal = sig
	} else {
		code := p.exitCode()
		r.ExitCode = &code
	}
	if c.Trial {
		r.Message = "the new app exited before it reported healthy"
	}
	a.report(r)
}

// denied reports an op the app's manifest does not allow, once per capability and run.
func (a *Agent) denied(c boot.Choice, capability string) {
	a.mu.Lock()
	key := c.Image.SHA256 + "|" + capability
	seen := a.deniedSeen[key]
	if a.deniedSeen == nil {
		a.deniedSeen = map[string]bool{}
	}
	a.deniedSeen[key] = true
	a.mu.Unlock()
	if seen {
		return
	}
	a.report(errreport.Report{Kind: errreport.CapabilityDenied, ImagePath: c.Image.Path, ImageVersion: c.Image.Version,
		Capability: capability, Message: "the application used a capability its manifest does not declare"})
}

// reattest makes the next check attest again, so that the service learns what runs now.
func (a *Agent) reattest() {
	a.mu.Lock()
	a.stale = true
	a.mu.Unlock()
	a.Nudge()
}

// reportRollback reports a trial image the boot package gave up on (its tries are used
// up: an app that crashed or stayed silent every time, an OS that never came up and
// attested) and replaced by the previous slot.
func (a *Agent) reportRollback(kind image.Kind, before boot.Record, now boot.Choice) {
	st := before.App
	step, code, what := errreport.StepHealth, "app_rolled_back", "became healthy"
	if kind == image.KindOS {
		st = before.OS
		step, code, what = errreport.StepBoot, "os_rolled_back", "came up and attested"
	}
	p := st.Pending
	if p == "" || now.Slot == p {
		return
	}
	trial := st.Images[p]
	after, err := a.slots.Record()
	if err != nil {
		return
	}
	bad := after.App.Bad
	if kind == image.KindOS {
		bad = after.OS.Bad
	}
	if _, ok := bad[p]; !ok {
		return
	}
	msg := fmt.Sprintf("%s never %s in %d tries; rolled back to %s", trial.Path, what, boot.DefaultTries, now.Image.Path)
	a.report(errreport.Report{Kind: errreport.UpdateFailed, Step: step, Code: code, Target: trial.Path, Message: clip(msg)})
	reason := "health_check_failed"
	if kind == image.KindOS {
		reason = "boot_failed"
	}
	a.rolledBack(kind, trial.Path, trial.Version, reason, msg)
	a.log.Warn("new image rolled back", "kind", kind, "target", trial.Path, "back_to", now.Image.Path)
	a.reattest()
}
