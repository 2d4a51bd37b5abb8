package sim

import (
	"context"
	"sync/atomic"
	"time"
)

// The reconnect storm (issue 15, item 5): after a regional power cut every device comes
// back at once with a certificate that expired while it was off, and attests again before
// anything else. Expire plays that on a running simulation: every started device loses
// its certificate and its connections at the same instant, and Stats.Storm times how long
// until each holds a new one.

// storm is the state of the last Expire.
type storm struct {
	seq atomic.Int64 // how many Expires so far; a device remembers the one it answered

	// Guarded by Sim.mu.
	at      time.Time
	expired int                // devices expired
	times   []time.Time        // when each device held a new certificate, in order
	wake    context.Context    // ends at the next Expire (made by New): waits end with it
	end     context.CancelFunc // ends wake
}

// StormStats is how the devices came back from the last Expire: At is when it began;
// Devices how many hold a new certificate since, of Expired; P50, P99 and Last when (the
// time to recover is Last - At once Devices is Expired).
type StormStats struct {
	At      time.Time `json:"at"`
	Expired int       `json:"expired"`
	Devices int       `json:"devices"`
	P50     time.Time `json:"p50"`
	P99     time.Time `json:"p99"`
	Last    time.Time `json:"last"`
}

// Expire makes the certificate of every started device expire now, as if the fleet had
// been off for longer than a certificate lives: each drops it and its connections at once
// (a long-poll in progress ends), then attests again as its loop does. It returns how many
// devices it expired. Safe from any goroutine while Run runs; a second Expire starts a new
// storm.
func (s *Sim) Expire() int {
	s.mu.Lock()
	devices := s.devices
	// The order matters to a device between its checks (waitContext): the new sequence is
	// visible before any certificate is dropped, and both before the old wake context ends.
	s.storm.seq.Add(1)
	s.storm.at, s.storm.times = s.now(), make([]time.Time, 0, len(devices))
	old := s.storm.end
	s.storm.wake, s.storm.end = context.WithCancel(context.Background())
	s.mu.Unlock()
	n := 0
	for _, d := range devices {
		if phase(d.phase.Load()) == phaseStarting {
			continue
		}
		d.dropCertificate()
		n++
	}
	s.mu.Lock()
	s.storm.expired = n
	s.mu.Unlock()
	old()
	s.log.Info("every simulated device's certificate expired", "devices", n)
	return n
}

// waitContext is ctx for a long-poll, ended early by the next Expire; skip says an Expire
// came since the device's turn began (seen), or its certificate is gone, so it must not
// wait but go round again and attest. The wake context is read before the check, so an
// Expire after the check ends the wait.
func (d *device) waitContext(ctx context.Context, seen int64) (wctx context.Context, cancel context.CancelFunc, skip bool) {
	d.s.mu.Lock()
	wake := d.s.storm.wake
	d.s.mu.Unlock()
	if d.s.storm.seq.Load() != seen || d.cert.Load() == nil {
		return nil, nil, true
	}
	w, end := context.WithTimeout(ctx, waitTimeout)
	stop := context.AfterFunc(wake, end)
	return w, func() { stop(); end() }, false
}

// recovered records that d holds a new certificate after the storm it had not answered.
func (d *device) recovered() {
	seq := d.s.storm.seq.Load()
	if seq == 0 || d.stormSeen == seq {
		return
	}
	d.stormSeen = seq
	d.s.mu.Lock()
	if d.s.storm.seq.Load() == seq {
		// Timed under the lock, so that times stays in order.
		d.s.storm.times = append(d.s.storm.times, d.s.now())
	}
	d.s.mu.Unlock()
}
