package mgmt

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/problem"
)

// errParked: the handler parked its request (parkForUpdates); answerParked answers it.
var errParked = errors.New("mgmt: request parked")

// parkForUpdates is waitForUpdates with the request parked while it waits (Config.Parking,
// httpapi/park.go): the device's wait holds no goroutine, and its connection none of
// net/http's buffers. A wait that answers at once, or one the connection cannot park for,
// is answered as waitForUpdates does.
func (a *API) parkForUpdates(c *call, since string) (any, error) {
	var (
		ready   = make(chan struct{}) // closed when pc and inPlace are set
		pc      *httpapi.Parked       // the parked connection, nil when parking failed
		rec     *httpapi.Recorder     // where the parked request's answer is formatted
		inPlace chan waitAnswer       // the answer when parking failed
	)
	done := func(u fleet.Updates, err error) {
		go func() {
			<-ready
			if pc == nil {
				inPlace <- waitAnswer{u, err}
				return
			}
			a.answerParked(c, pc, rec, u, err)
		}()
	}
	// The re-checks outlive this handler; they keep the request's values (its ID).
	u, cancel, err := a.fleet.ParkUpdates(context.WithoutCancel(c.ctx), *c.device, since, done)
	if err != nil {
		return nil, problem.From(err)
	}
	if cancel == nil {
		return u, nil
	}
	gone := func() { // the device sent or closed before its answer: answer now
		<-ready
		if cancel() {
			a.answerParked(c, pc, rec, fleet.Updates{Generation: since}, nil)
		}
	}
	var perr error
	if pc, perr = a.parking.Park(c.w, c.r, fleet.ConnRestore(c.ctx), gone); perr == nil {
		rec = httpapi.NewRecorder(c.w.Header())
		c.x.Park(rec)
		c.r, c.device, c.body = c.x.R, nil, nil // what the answer needs of them is kept
		close(ready)
		return nil, errParked
	}
	inPlace = make(chan waitAnswer, 1)
	close(ready)
	_ = http.NewResponseController(c.w).SetWriteDeadline(time.Now().Add(fleet.MaxWait + 10*time.Second))
	select {
	case r := <-inPlace:
		if r.err != nil {
			return nil, problem.From(r.err)
		}
		return r.u, nil
	case <-c.ctx.Done():
		cancel()
		return nil, c.ctx.Err()
	}
}

type waitAnswer struct {
	u   fleet.Updates
	err error
}

// answerParked answers a parked wait through rec, with its access line and metrics, then
// writes the answer to the connection and hands it back.
func (a *API) answerParked(c *call, pc *httpapi.Parked, rec *httpapi.Recorder, u fleet.Updates, err error) {
	if err == nil {
		err = a.write(c, u)
	} else {
		err = problem.From(err)
	}
	a.done(c, err)
	pc.Answer(rec)
}
