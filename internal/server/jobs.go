package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/fleet/rollout"
	"github.com/moat-iot/moat/internal/store"
)

// Job is background work that must run on one replica at a time: once per Interval among
// every server that shares the database, whichever claims the period first. Run gets the
// server's clock reading at the claim; it should finish well within Interval, because the
// period's lease lapses after Interval and another replica may then start the next run.
// A failed Run is logged and retried the next period.
type Job struct {
	// Name identifies the job's lease: the same on every replica, unique per server.
	Name     string
	Interval time.Duration
	Run      func(ctx context.Context, now time.Time) error
}

// RefreshInterval is how often the server re-signs TUF timestamps nearing expiry and
// removes expired attestation nonces.
const RefreshInterval = time.Hour

// builtinJobs are the jobs every server runs.
func (s *Server) builtinJobs() []Job {
	return []Job{
		// Keeps every tenant's TUF timestamp fresh (rule 2, freeze).
		{Name: "tuf-timestamps", Interval: RefreshInterval, Run: func(ctx context.Context, _ time.Time) error {
			n, err := s.repo.Refresh(ctx)
			if n > 0 {
				s.log.InfoContext(ctx, "TUF timestamps re-signed", "views", n)
			}
			return err
		}},
		{Name: "attestation-nonces", Interval: RefreshInterval, Run: func(ctx context.Context, now time.Time) error {
			return s.store.InTx(ctx, func(tx store.Tx) error {
				_, err := tx.Nonces().DeleteExpired(ctx, now.Add(-time.Minute))
				return err
			})
		}},
		// Removes uploaded packages that no image refers to after their grace period
		// (repo.BlobGrace), so uploads cannot fill the disk (issue 10, defect 3).
		{Name: "blob-gc", Interval: RefreshInterval, Run: func(ctx context.Context, now time.Time) error {
			n, bytes, err := s.repo.GC(ctx, now)
			if n > 0 {
				s.log.InfoContext(ctx, "unreferenced blobs removed", "blobs", n, "bytes", bytes)
			}
			return err
		}},
		s.errorReportRetentionJob(),
		s.rolloutAdvanceJob(),
	}
}

// RolloutAdvanceInterval is the default of Config.RolloutAdvanceInterval: how often the
// server looks at the running staged rollouts; a stage opens at most this long after its
// soak ended.
const RolloutAdvanceInterval = 10 * time.Second

// MinRolloutAdvanceInterval bounds Config.RolloutAdvanceInterval from below: each run
// reads every running rollout, and its lease is one write per period.
const MinRolloutAdvanceInterval = 100 * time.Millisecond

// rolloutAdvanceEvery is the rollout-advance job's interval: RolloutAdvanceInterval unless
// the config shortens it.
func (c Config) rolloutAdvanceEvery() time.Duration {
	if c.RolloutAdvanceInterval == 0 {
		return RolloutAdvanceInterval
	}
	return c.RolloutAdvanceInterval
}

// rolloutAdvanceJob advances staged rollouts (issue 12). The lease runs it on one replica
// per period; each change is also a conditional write (rollout.Advancer), so a stage
// advances once even when two replicas run it at once.
func (s *Server) rolloutAdvanceJob() Job {
	a := &rollout.Advancer{Store: s.store, Notify: s.fleet.Notify, Log: s.log.With("component", "rollout")}
	return Job{Name: "rollout-advance", Interval: s.cfg.rolloutAdvanceEvery(), Run: func(ctx context.Context, now time.Time) error {
		_, err := a.Run(ctx, now)
		return err
	}}
}

// AddJob adds a background job; call it after Open and before Serve. The composition root
// adds its own (blob collection, report retention) beside the built-in ones.
func (s *Server) AddJob(j Job) error {
	if s.serving.Load() {
		return errors.New("add job: the server is already serving")
	}
	if j.Name == "" || j.Interval <= 0 || j.Run == nil {
		return fmt.Errorf("add job %q: a job needs a name, a positive interval and a function", j.Name)
	}
	for _, o := range s.jobs {
		if o.Name == j.Name {
			return fmt.Errorf("add job %q: a job of that name exists", j.Name)
		}
	}
	s.jobs = append(s.jobs, j)
	return nil
}

// holderName names this server on the leases it takes, for an operator reading the
// leases table: the host name and a random suffix, so two servers on one host differ.
func holderName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return host + "-" + rand.Text()[:8]
}

// runJobs starts one goroutine per job and returns a channel closed when all have returned
// after ctx is done.
func (s *Server) runJobs(ctx context.Context) <-chan struct{} {
	// The holder name ties this process to its rows in the leases table.
	s.log.InfoContext(ctx, "background jobs started", "lease_holder", s.holder, "jobs", len(s.jobs))
	var wg sync.WaitGroup
	for _, j := range s.jobs {
		wg.Go(func() { s.runJob(ctx, j) })
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// runJob claims each period of j's lease it can and runs j in the periods it claimed. The
// store grants a period to one claimant only (store.Leases), so a job runs on exactly one
// replica per period, and a stopped replica's lease lapses at its period's end, when
// another claims the next. Attacked by TestServer_JobsRunOnOneReplica.
func (s *Server) runJob(ctx context.Context, j Job) {
	log := s.log.With("job", j.Name)
	for {
		now := s.now()
		var held bool
		var until time.Time
		err := s.store.InTx(ctx, func(tx store.Tx) error {
			var err error
			held, until, err = tx.Leases().Acquire(ctx, j.Name, s.holder, now, now.Add(j.Interval))
			return err
		})
		wait := until.Sub(s.now())
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.WarnContext(ctx, "claim background job lease", "err", err)
			wait = min(j.Interval, time.Minute)
		case held:
			if err := j.Run(ctx, now); err != nil && ctx.Err() == nil {
				log.ErrorContext(ctx, "background job", "err", err)
			}
			wait = until.Sub(s.now())
		}
		// Every replica wakes when the period ends; a little jitter spreads their claims.
		// The wait is capped at one interval, in case another replica's clock runs ahead.
		wait = min(max(wait, 0), j.Interval) + mrand.N(j.Interval/50+1) //nolint:gosec // G404: jitter, not a secret
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
