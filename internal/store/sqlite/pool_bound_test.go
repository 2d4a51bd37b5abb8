package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/tenant"
)

// TestStmtCache_PrepareDoesNotWaitForAConnection: the read pool is bounded (four
// connections per core, at least 8); when every connection is held by a read transaction
// that runs a query nobody prepared yet, each must still finish. A cache that prepared
// through the pool while its transaction held a connection deadlocked here, as issue 15's
// load run did with 2,000 devices woken at once.
func TestStmtCache_PrepareDoesNotWaitForAConnection(t *testing.T) {
	t.Parallel()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	n := max(8, 4*runtime.GOMAXPROCS(0)) // the pool's size: every connection held
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var inside, wg sync.WaitGroup
	inside.Add(n)
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			errs <- s.InReadTx(ctx, func(tx store.Tx) error {
				inside.Done()
				inside.Wait() // every connection is held now
				_, err := tx.Tenants().Get(ctx, tenant.ID("tnt_unknown"))
				if errors.Is(err, store.ErrNotFound) {
					return nil
				}
				return err
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a read transaction on a full pool = %v, want it to finish", err)
		}
	}
}
