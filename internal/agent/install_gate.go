package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/atomicfile"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/updstate"
)

// When an image that is downloaded and verified may be installed (issue 12): inside one
// of the assignment's install windows (the group's maintenance window) unless the image
// ignores them, and not while the app defers updates, for at most the product's bound
// counted from the first deferral of that image. The downloads wait in the state
// directory meanwhile, and the check loop wakes when the hold ends.
//
// Deferral codes in the deferred update-state reports.
const (
	CodeMaintenanceWindow = "maintenance_window"
	CodeAppDeferred       = "app_deferred"
)

// deferralFile holds the app's deferral and, per pending image, when a deferral first held
// it back: the bound runs from there, across agent restarts
// (TestAgent_DeferralSurvivesRestart).
const deferralFile = "deferral.json"

// maxFirstHeld bounds the first-deferral entries kept: one per kind is what is ever
// pending; older ones are pruned at every check.
const maxFirstHeld = 8

type deferralState struct {
	AppUntil  time.Time            `json:"app_until,omitzero"`   // the app asked to install nothing before
	FirstHeld map[string]time.Time `json:"first_held,omitempty"` // by image SHA-256
}

// deferral is the app's side of the install gate: what update.defer and update.allow set,
// kept on disk (written atomically), and read by the check loop.
type deferral struct {
	dir   string
	now   func() time.Time
	log   *slog.Logger
	nudge func()

	mu sync.Mutex
	st deferralState
}

func openDeferral(dir string, now func() time.Time, log *slog.Logger, nudge func()) (*deferral, error) {
	d := &deferral{dir: dir, now: now, log: log, nudge: nudge}
	b, err := os.ReadFile(filepath.Join(dir, deferralFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return d, nil
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", deferralFile, err)
	}
	if err := json.Unmarshal(b, &d.st); err != nil || len(d.st.FirstHeld) > maxFirstHeld {
		// The state directory is the agent's own (trusted); a damaged file is a crash
		// mid-write the atomic rename rules out, or a disk fault: forget the app's deferral,
		// so that updates install rather than wait on state nobody can read.
		log.Warn("update deferral state unreadable: the app's deferral is dropped", "err", err)
		d.st = deferralState{}
	}
	return d, nil
}

// DeferUpdates is periph.UpdateControl: the app asks to install nothing for dur.
func (d *deferral) DeferUpdates(dur time.Duration) (time.Time, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	until := d.now().UTC().Add(dur).Truncate(time.Second)
	st := d.st
	st.AppUntil = until
	if err := d.save(st); err != nil {
		return time.Time{}, err
	}
	d.log.Info("the app defers updates", "until", until)
	return until, nil
}

// AllowUpdates is periph.UpdateControl: the app's deferral ends, and a check runs now so
// that what waits for it is installed.
func (d *deferral) AllowUpdates() error {
	d.mu.Lock()
	st := d.st
	st.AppUntil = time.Time{}
	err := d.save(st)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.log.Info("the app allows updates")
	d.nudge()
	return nil
}

// save writes st and makes it the state; d.mu is held.
func (d *deferral) save(st deferralState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(d.dir, deferralFile, b); err != nil {
		return err
	}
	d.st = st
	return nil
}

// hold reports whether the app's deferral holds back the image sha256 at now, and until
// when: the app's until, but never past the first time it held this image plus bound.
// Enforces issue 12's bound; attacked by TestAgent_DeferralIsBounded.
func (d *deferral) hold(now time.Time, sha256 string, bound time.Duration) (time.Time, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !now.Before(d.st.AppUntil) || bound <= 0 {
		return time.Time{}, false, nil
	}
	first, ok := d.st.FirstHeld[sha256]
	if !ok {
		st := deferralState{AppUntil: d.st.AppUntil, FirstHeld: map[string]time.Time{sha256: now.UTC()}}
		for k, v := range d.st.FirstHeld {
			if len(st.FirstHeld) < maxFirstHeld {
				st.FirstHeld[k] = v
			}
		}
		if err := d.save(st); err != nil {
			return time.Time{}, false, err
		}
		first = now.UTC()
	}
	limit := first.Add(bound)
	if !now.Before(limit) {
		return time.Time{}, false, nil
	}
	if d.st.AppUntil.Before(limit) {
		limit = d.st.AppUntil
	}
	return limit, true, nil
}

// prune forgets the first deferrals of images no longer pending.
func (d *deferral) prune(pending map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := deferralState{AppUntil: d.st.AppUntil, FirstHeld: map[string]time.Time{}}
	for k, v := range d.st.FirstHeld {
		if pending[k] {
			st.FirstHeld[k] = v
		}
	}
	if len(st.FirstHeld) == len(d.st.FirstHeld) {
		return
	}
	if err := d.save(st); err != nil {
		d.log.Warn("update deferral state", "err", err)
	}
}

// installGate says whether a staged image may be installed now; if not, the deferral code
// and until when. The app's deferral comes first: it holds every update, security updates
// with IgnoreWindow included (as Azure Sphere's deferral does), for at most the bound.
func (a *Agent) installGate(plan update.Plan, s stagedImage, now time.Time) (code string, until time.Time, err error) {
	if until, held, err := a.deferral.hold(now, s.im.SHA256, plan.MaxDeferral); err != nil || held {
		return CodeAppDeferred, until, err
	}
	if s.im.IgnoreWindow || len(plan.InstallWindows) == 0 {
		return "", time.Time{}, nil
	}
	for _, w := range plan.InstallWindows {
		if w.Contains(now) {
			return "", time.Time{}, nil
		}
		if w.From.After(now) {
			return CodeMaintenanceWindow, w.From, nil
		}
	}
	// Every window is over: a newer assignment brings the next ones; look again then.
	return CodeMaintenanceWindow, now.Add(a.cfg.CheckInterval).UTC().Truncate(time.Second), nil
}

// deferred reports that a staged image waits, once per target, code and until.
func (a *Agent) deferred(s stagedImage, code string, until time.Time) {
	key := fmt.Sprintf("%s %s %d", s.im.Path, code, until.Unix())
	a.mu.Lock()
	seen := a.lastDeferred[s.kind] == key
	a.lastDeferred[s.kind] = key
	a.mu.Unlock()
	if seen {
		return
	}
	a.log.Info("update deferred", "target", s.im.Path, "code", code, "until", until)
	msg := "outside the device group's maintenance window"
	if code == CodeAppDeferred {
		msg = "the app defers updates"
	}
	a.updateState(updstate.Deferred, s.kind, s.im.Path, s.im.Version, func(r *updstate.Report) {
		u := until.UTC()
		r.Code, r.Message, r.DeferredUntil = code, msg, &u
	})
}

// wakeAt asks the check loop to run again at t (the end of a hold), unless it runs
// earlier anyway.
func (a *Agent) wakeAt(t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.wake.IsZero() || t.Before(a.wake) {
		a.wake = t
	}
}

// nextWake returns how long until the wake-up asked for, and clears it; 0: none.
func (a *Agent) nextWake() time.Duration {
	a.mu.Lock()
	t := a.wake
	a.wake = time.Time{}
	a.mu.Unlock()
	if t.IsZero() {
		return 0
	}
	// A second late, so that the check sees the hold ended by the device's clock.
	return max(t.Sub(a.cfg.Now())+time.Second, minRetry)
}

// clearDeferred forgets the deferral reported for kind (its image was installed).
func (a *Agent) clearDeferred(kind image.Kind) {
	a.mu.Lock()
	delete(a.lastDeferred, kind)
	a.mu.Unlock()
}
