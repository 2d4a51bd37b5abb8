package fleet_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/blob/fsblob"
	"github.com/moat-iot/moat/internal/device"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/postgres"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// databases are the stores the group-commit and nonce tests run on.
var databases = []string{"sqlite", "postgres"}

// sharedPlatform is a platform on db whose CA key-encryption key the test knows, so that
// it can run further fleet services (a restarted process, another replica) over the same
// database, each opening its own connection to it (reopen).
type sharedPlatform struct {
	*testenv.Platform
	kek    []byte
	reopen func(t *testing.T) store.Store
	os     testenv.Image
}

func newSharedPlatform(t *testing.T, db string) *sharedPlatform {
	t.Helper()
	dir := t.TempDir()
	kekPath := filepath.Join(dir, "ca.kek")
	text := []byte(strings.Repeat("0123456789abcdef", 4) + t.Name())
	if err := os.WriteFile(kekPath, text, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(text) // as internal/server derives the KEK from the file
	dsn := filepath.Join(dir, "moat.db")
	if db == "postgres" {
		dsn = testenv.FreshPostgresDatabase(t)
	}
	p := testenv.NewPlatform(t, testenv.WithConfig(func(c *server.Config) {
		c.Database, c.CAKeyKEK = dsn, kekPath
	}))
	sp := &sharedPlatform{Platform: p, kek: sum[:], os: p.PublishOS("moat-os", "1.0.0", 1, "Retail")}
	sp.reopen = func(t *testing.T) store.Store {
		t.Helper()
		var st store.Store
		var err error
		if db == "postgres" {
			st, err = postgres.Open(t.Context(), dsn, time.Now)
		} else {
			st, err = sqlite.Open(t.Context(), dsn, time.Now)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	return sp
}

// recordedSerials returns the serials recorded for the device.
func recordedSerials(t *testing.T, st store.Store, p *testenv.Platform, id string) []string {
	t.Helper()
	var out []string
	err := st.InReadTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(p.Tenant))
		if err != nil {
			return err
		}
		certs, err := tt.Certificates().ListForDevice(t.Context(), device.ID(id), 100)
		for _, c := range certs {
			out = append(out, c.Serial)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wantNonceRefusal fails unless err is a refusal for the nonce.
func wantNonceRefusal(t *testing.T, what string, err error) {
	t.Helper()
	r, ok := errors.AsType[*fleetsvc.Refusal](err)
	if !ok || r.Reason != device.RefusedNonce {
		t.Errorf("%s = %v, want a refusal %s", what, err, device.RefusedNonce)
	}
}

// TestNonce_SingleUseUnderConcurrency attacks rule 1's single use where it is weakest:
// the same genuine evidence sent 50 times at once, half to this replica and half to
// another one sharing the database. Exactly one certificate is issued and recorded; every
// other copy is refused for its nonce. Without the durable uniqueness (store.Nonces.Spend)
// the two replicas would each issue one; without the in-memory set a replica would still
// issue one only, but at a write per copy.
func TestNonce_SingleUseUnderConcurrency(t *testing.T) {
	for _, db := range databases {
		t.Run(db, func(t *testing.T) {
			p := newSharedPlatform(t, db)
			other := replica(t, p.reopen(t), p.kek)
			d := p.NewDevice(true, "")
			ev := p.Evidence(d, false, p.os.Measurement())
			const copies = 50
			errs := make([]error, copies)
			serials := make([]string, copies)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range copies {
				svc := p.Server.Fleet()
				if i%2 == 1 {
					svc = other
				}
				wg.Go(func() {
					<-start
					var is fleetsvc.Issued
					is, errs[i] = svc.Attest(t.Context(), ev)
					serials[i] = is.Serial
				})
			}
			close(start)
			wg.Wait()
			var issued []string
			for i, err := range errs {
				if err == nil {
					issued = append(issued, serials[i])
					continue
				}
				wantNonceRefusal(t, fmt.Sprintf("copy %d", i), err)
			}
			if len(issued) != 1 {
				t.Fatalf("%d of %d copies of one evidence got a certificate (%v), want exactly 1", len(issued), copies, issued)
			}
			if got := recordedSerials(t, p.Server.Store(), p.Platform, d.ID); len(got) != 1 || got[0] != issued[0] {
				t.Errorf("recorded certificates %v, want only %s", got, issued[0])
			}
		})
	}
}

// TestNonce_SingleUseAcrossRestart: a nonce spent by one process is refused by the next
// one, whose memory of spent nonces starts empty, on a fresh connection to the database:
// the spend was durable, in the transaction of the certificate, before the certificate was
// returned. A spent set kept only in memory, or a certificate answered before the commit,
// fails it.
func TestNonce_SingleUseAcrossRestart(t *testing.T) {
	for _, db := range databases {
		t.Run(db, func(t *testing.T) {
			p := newSharedPlatform(t, db)
			d := p.NewDevice(true, "")
			ev := p.Evidence(d, false, p.os.Measurement())
			is, err := p.Server.Fleet().Attest(t.Context(), ev)
			if err != nil {
				t.Fatalf("first use: %v", err)
			}
			restarted := replica(t, p.reopen(t), p.kek)
			if n := fleetsvc.SpentLen(restarted); n != 0 {
				t.Fatalf("a new service remembers %d spent nonces, want 0", n)
			}
			_, err = restarted.Attest(t.Context(), ev)
			wantNonceRefusal(t, "replay after restart", err)
			if got := recordedSerials(t, p.Server.Store(), p.Platform, d.ID); len(got) != 1 || got[0] != is.Serial {
				t.Errorf("recorded certificates %v, want only %s", got, is.Serial)
			}
			// The replay is recorded on the device for support staff.
			rec, err := p.Admin.GetDevice(t.Context(), p.Tenant, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Attestation == nil || rec.Attestation.Refusal != device.RefusedNonce {
				t.Errorf("device attestation record %+v, want refusal %s", rec.Attestation, device.RefusedNonce)
			}
		})
	}
}

// countTx counts the transactions a store commits or rolls back.
type countTx struct {
	store.Store
	n atomic.Int64
}

func (c *countTx) InTx(ctx context.Context, fn func(store.Tx) error) error {
	c.n.Add(1)
	return c.Store.InTx(ctx, fn)
}

var errBoom = errors.New("boom")

// TestGroupCommit_OneFailureDoesNotFailOthers: eight writes share one transaction; one of
// them writes and then fails. It gets its error and its write is gone; the seven others
// succeed and are durable, committed by one retry of the batch without it.
func TestGroupCommit_OneFailureDoesNotFailOthers(t *testing.T) {
	for _, db := range databases {
		t.Run(db, func(t *testing.T) {
			p := newSharedPlatform(t, db)
			st := &countTx{Store: p.reopen(t)}
			// A long wait: the batch waits for every announced write, not for the clock.
			c := fleetsvc.NewCommitter(st, 16, 16, time.Minute)
			const writes, bad = 8, 5
			nonce := func(i int) string { return fmt.Sprintf("%s-nonce-%d", t.Name(), i) }
			tickets := make([]*fleetsvc.Ticket, writes)
			for i := range tickets {
				tickets[i] = c.Announce()
			}
			exp := time.Now().Add(time.Hour)
			errs := make([]error, writes)
			var wg sync.WaitGroup
			for i := range writes {
				wg.Go(func() {
					errs[i] = c.Do(t.Context(), tickets[i], func(ctx context.Context, tx store.Tx) error {
						if err := tx.Nonces().Spend(ctx, "dev", nonce(i), exp, time.Now()); err != nil {
							return err
						}
						if i == bad {
							return errBoom
						}
						return nil
					})
				})
			}
			wg.Wait()
			for i, err := range errs {
				if i == bad && !errors.Is(err, errBoom) || i != bad && err != nil {
					t.Errorf("write %d: %v", i, err)
				}
			}
			if n := st.n.Load(); n != 2 {
				t.Errorf("%d transactions for one batch with one failure, want 2 (the batch, then it without the failure)", n)
			}
			// What committed is spent: spending it again is refused; the failure's is not.
			err := p.Server.Store().InTx(t.Context(), func(tx store.Tx) error {
				for i := range writes {
					err := tx.Nonces().Spend(t.Context(), "dev", nonce(i), exp, time.Now())
					if i == bad && err != nil || i != bad && !errors.Is(err, store.ErrNonceUsed) {
						t.Errorf("spend nonce of write %d again = %v", i, err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// gatedStore is a real store whose next write transaction, once armed, waits until the
// test releases it: a fault-injection knob for a slow disk.
type gatedStore struct {
	store.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) InTx(ctx context.Context, fn func(store.Tx) error) error {
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Store.InTx(ctx, fn)
}

// TestGroupCommit_QueueFullIs503: while the database is slow, attestations past the
// queue's bound are turned away at once with ErrBusy, which the device API answers 503
// with Retry-After, instead of queueing without bound; the queued ones then complete.
func TestGroupCommit_QueueFullIs503(t *testing.T) {
	for _, db := range databases {
		t.Run(db, func(t *testing.T) {
			p := newSharedPlatform(t, db)
			g := &gatedStore{Store: p.reopen(t), entered: make(chan struct{}), release: make(chan struct{})}
			svc := queueReplica(t, g, p.kek, 1)
			rp, err := repo.New(g, mustBlobs(t), mustKey(t), time.Now)
			if err != nil {
				t.Fatal(err)
			}
			api, err := mgmt.New(mgmt.Config{Store: g, Logger: slog.New(slog.DiscardHandler), Now: time.Now,
				Metrics: mgmt.NewMetrics(prometheus.NewRegistry()), Repo: rp, Fleet: svc})
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			api.Register(mux, mgmt.Devices)
			srv := httptest.NewServer(mux)
			defer srv.Close()

			evidence := func() []byte {
				d := p.NewDevice(true, "")
				n, err := svc.NewNonce(t.Context(), device.ID(d.ID))
				if err != nil {
					t.Fatal(err)
				}
				ev, err := attest.Sign(d.Key, attest.Evidence{DeviceID: d.ID, Nonce: n.Nonce, Time: time.Now(), Measurements: []attest.Measurement{p.os.Measurement()}})
				if err != nil {
					t.Fatal(err)
				}
				return ev
			}
			first, second, third := evidence(), evidence(), evidence()
			g.armed.Store(true)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			wg.Go(func() { _, errs[0] = svc.Attest(t.Context(), first) })
			<-g.entered // its batch holds the database; the queue is empty again
			wg.Go(func() { _, errs[1] = svc.Attest(t.Context(), second) })
			for deadline := time.Now().Add(time.Minute); fleetsvc.QueuedAttestations(svc) != 1; {
				if time.Now().After(deadline) {
					t.Fatal("the second attestation never queued")
				}
				time.Sleep(time.Millisecond) // polling for a condition, not a timing assertion
			}

			if _, err := svc.Attest(t.Context(), third); !errors.Is(err, fleetsvc.ErrBusy) {
				t.Errorf("Attest with the queue full = %v, want ErrBusy", err)
			}
			resp, err := srv.Client().Post(srv.URL+"/api/v1/device/attestations", "application/json", strings.NewReader(string(third)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if resp.StatusCode != http.StatusServiceUnavailable || err != nil || secs < 1 {
				t.Errorf("attestation with the queue full: status %d, Retry-After %q; want 503 and a positive number of seconds",
					resp.StatusCode, resp.Header.Get("Retry-After"))
			}

			close(g.release)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("queued attestation %d = %v, want a certificate", i, err)
				}
			}
			// The turned-away evidence was not spent: its device may present it again.
			if _, err := svc.Attest(t.Context(), third); err != nil {
				t.Errorf("turned-away evidence presented again = %v, want a certificate", err)
			}
		})
	}
}

// queueReplica is replica with an attestation queue of queue writes and no batch wait.
func queueReplica(t *testing.T, st store.Store, kek []byte, queue int) *fleetsvc.Service {
	t.Helper()
	online := mustKey(t)
	rp, err := repo.New(st, mustBlobs(t), online, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := fleetsvc.New(fleetsvc.Config{Store: st, Repo: rp, Logger: slog.New(slog.DiscardHandler), Now: time.Now,
		KEK: kek, Director: online, Registerer: prometheus.NewRegistry(), AttestQueue: queue, AttestBatchWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func mustBlobs(t *testing.T) *fsblob.Store {
	t.Helper()
	b, err := fsblob.Open(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
