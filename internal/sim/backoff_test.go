package sim_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/sim"
)

// busyServer answers every device request 503 with Retry-After: 1 and records when each
// device asked for a nonce.
type busyServer struct {
	*httptest.Server
	mu   sync.Mutex
	asks map[string][]time.Time
}

func newBusyServer(t *testing.T) *busyServer {
	t.Helper()
	b := &busyServer{asks: map[string][]time.Time{}}
	b.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			DeviceID string `json:"device_id"`
		}
		if r.URL.Path == "/api/v1/device/attestation/nonces" && json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req) == nil {
			b.mu.Lock()
			b.asks[req.DeviceID] = append(b.asks[req.DeviceID], time.Now())
			b.mu.Unlock()
		}
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"status":503,"code":"server_busy"}`))
	}))
	t.Cleanup(b.Close)
	return b
}

// asked returns a copy of the nonce requests per device.
func (b *busyServer) asked() map[string][]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string][]time.Time, len(b.asks))
	for k, v := range b.asks {
		out[k] = append([]time.Time(nil), v...)
	}
	return out
}

// TestSim_BacksOffOn503: a device API that answers every request 503 with Retry-After makes
// each device wait at least that long between tries, and keep trying: none gives up, none
// hammers.
func TestSim_BacksOffOn503(t *testing.T) {
	t.Parallel()
	const n = 5
	f := newFleet(t)
	busy := newBusyServer(t)
	cfg := f.config(t, n)
	cfg.DeviceURL = busy.URL
	cfg.ServerCAs.AddCert(busy.Certificate())
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	end := time.Now().Add(time.Minute)
	for {
		asks := busy.asked()
		done := len(asks) == n
		for _, ts := range asks {
			done = done && len(ts) >= 3
		}
		if done {
			for id, ts := range asks {
				for i := 1; i < len(ts); i++ {
					if gap := ts[i].Sub(ts[i-1]); gap < time.Second {
						t.Errorf("device %.16s asked again %v after a 503 with Retry-After: 1", id, gap)
					}
				}
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("after a minute, nonce requests per device = %d devices %v; want %d devices asking at least 3 times", len(asks), asks, n)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, not timing one
	}
	st := s.Stats()
	if st.GaveUp != 0 || st.Attested != 0 || st.Started != n || st.Unavailable < 2*n || st.Attesting+st.Backoff != n {
		t.Errorf("stats = %s (unavailable %d), want %d devices still trying, none given up", st.Line(), st.Unavailable, n)
	}
}

// TestSim_RetriesLostConnections: with no device API listening, devices retry with backoff
// and none gives up.
func TestSim_RetriesLostConnections(t *testing.T) {
	t.Parallel()
	const n = 5
	f := newFleet(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := f.config(t, n)
	cfg.DeviceURL = "https://" + addr
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	st := waitFor(t, s, time.Minute, "retrying", func(st sim.Stats) bool { return st.Started == n && st.Retries >= 2*n })
	if st.GaveUp != 0 || st.Attesting+st.Backoff != n {
		t.Errorf("stats = %s, want every device still trying", st.Line())
	}
}
