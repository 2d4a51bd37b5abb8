package agent

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/agent/updqueue"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/updstate"
)

// Download progress is reported at most every progressEvery, and only once another
// progressStep of the image arrived, so that a download is a handful of reports however
// large or slow it is.
const (
	progressEvery = 5 * time.Second
	progressStep  = 10 // percent
)

// updateStates reports each step of an update to the service (issue 11): queued on disk
// (internal/agent/updqueue) so that none is lost offline, sent with the error reports.
type updateStates struct {
	q   *updqueue.Queue
	now func() time.Time
	log *slog.Logger

	mu        sync.Mutex
	last      time.Time             // the newest report's time: reports of one agent never tie or go back
	announced map[image.Kind]string // the target last reported assigned, per kind
	progress  map[string]progress   // per target being downloaded
}

type progress struct {
	at   time.Time
	have int64
}

func openUpdateStates(dir string, now func() time.Time, log *slog.Logger) (*updateStates, error) {
	q, err := updqueue.Open(updqueue.Config{Dir: dir, Logger: log})
	if err != nil {
		return nil, err
	}
	return &updateStates{q: q, now: now, log: log, announced: map[image.Kind]string{}, progress: map[string]progress{}}, nil
}

// put stamps r with the device's time and a fresh ID and queues it; a report the queue
// refuses is logged. It reports whether r was queued.
func (u *updateStates) put(r updstate.Report) bool {
	u.mu.Lock()
	at := u.now().UTC().Truncate(time.Microsecond)
	if !at.After(u.last) {
		at = u.last.Add(time.Microsecond) // keeps (at, id) in the order the steps happened
	}
	u.last = at
	u.mu.Unlock()
	r.At, r.ID = at, errreport.NewID(at)
	if err := u.q.Put(r); err != nil {
		u.log.Error("queue update state", "state", r.State, "target", r.Target, "err", err)
		return false
	}
	return true
}

// updateState queues a report of an update step of kind's image target and wakes the
// sender.
func (a *Agent) updateState(state updstate.State, kind image.Kind, target, version string, fill func(*updstate.Report)) {
	r := updstate.Report{State: state, Kind: string(kind), Target: target, Version: version}
	if fill != nil {
		fill(&r)
	}
	if !a.states.put(r) {
		return
	}
	select {
	case a.sendKick <- struct{}{}:
	default:
	}
}

// assigned reports a new assignment of im once: a check that finds the same target again
// (a download retried) does not repeat it.
func (a *Agent) assigned(kind image.Kind, im update.PlannedImage) {
	u := a.states
	u.mu.Lock()
	seen := u.announced[kind] == im.Path
	u.announced[kind] = im.Path
	u.mu.Unlock()
	if !seen {
		a.updateState(updstate.Assigned, kind, im.Path, im.Version, nil)
	}
}

// downloading reports that a download of im starts (or resumes with the bytes of its
// .part file) and, through onProgress, how it goes.
func (a *Agent) downloading(kind image.Kind, im update.PlannedImage, dst string) {
	if im.Length <= 0 {
		return
	}
	var have int64
	if fi, err := os.Stat(dst + ".part"); err == nil {
		have = min(fi.Size(), im.Length)
	}
	u := a.states
	u.mu.Lock()
	u.progress[im.Path] = progress{at: u.now(), have: have}
	u.mu.Unlock()
	a.downloaded(kind, im, have)
}

// downloaded reports have bytes of im.
func (a *Agent) downloaded(kind image.Kind, im update.PlannedImage, have int64) {
	a.updateState(updstate.Downloading, kind, im.Path, im.Version, func(r *updstate.Report) {
		r.BytesDone, r.BytesTotal = have, im.Length
	})
}

// onProgress is update.Config.Progress: it reports a download's progress at most every
// progressEvery and progressStep percent, and its end.
func (a *Agent) onProgress(im update.PlannedImage, have int64) {
	if im.Length <= 0 {
		return
	}
	u := a.states
	now := u.now()
	u.mu.Lock()
	p := u.progress[im.Path]
	due := have == im.Length || (now.Sub(p.at) >= progressEvery && (have-p.have)*100 >= progressStep*im.Length)
	if due {
		u.progress[im.Path] = progress{at: now, have: have}
	}
	if have == im.Length {
		delete(u.progress, im.Path)
	}
	u.mu.Unlock()
	if due {
		a.downloaded(image.Kind(im.Kind), im, have)
	}
}

// failedState reports a failed step of im with its reason.
func (a *Agent) failedState(kind image.Kind, target, version, code, msg string) {
	a.updateState(updstate.Failed, kind, target, version, func(r *updstate.Report) {
		r.Code, r.Message = code, clip(msg)
	})
}

// rolledBack reports that a trial image was given up and the device went back.
func (a *Agent) rolledBack(kind image.Kind, target, version, code, msg string) {
	a.updateState(updstate.RolledBack, kind, target, version, func(r *updstate.Report) {
		r.Code, r.Message = code, clip(msg)
	})
}

// sendUpdateStates uploads the update-state queue with the device's certificate.
func (a *Agent) sendUpdateStates(ctx context.Context, s *session) {
	if n, err := a.states.q.Send(ctx, s.att.API()); err != nil {
		a.log.WarnContext(ctx, "send update states", "err", err)
	} else if n > 0 {
		a.log.DebugContext(ctx, "update states sent", "count", n)
	}
}
