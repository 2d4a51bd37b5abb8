package server

import (
	"context"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// DefaultErrorReportRetention is how long error reports are kept by default.
const DefaultErrorReportRetention = 90 * 24 * time.Hour

// retentionBatch is how many reports one transaction of the retention job deletes: small
// enough that uploads of the devices concerned wait on it briefly, large enough that a
// backlog of a million goes in a thousand transactions.
const retentionBatch = 1000

// errorReportRetentionJob deletes the error reports received more than the configured
// retention before each run, and takes them out of their issues (store.ErrorIssues).
func (s *Server) errorReportRetentionJob() Job {
	return Job{Name: "error-report-retention", Interval: RefreshInterval, Run: func(ctx context.Context, now time.Time) error {
		n, err := pruneErrorReports(ctx, s.store, now.Add(-s.cfg.ErrorReportRetention))
		if n > 0 {
			s.log.InfoContext(ctx, "old error reports deleted", "reports", n, "retention", s.cfg.ErrorReportRetention.String())
		}
		return err
	}}
}

// pruneErrorReports deletes every tenant's reports received before before, a batch per
// transaction, and returns how many it deleted.
func pruneErrorReports(ctx context.Context, st store.Store, before time.Time) (int, error) {
	total := 0
	for p := (store.Page{Limit: 100}); ; {
		var ts []tenant.Tenant
		err := st.InReadTx(ctx, func(tx store.Tx) error {
			var err error
			ts, err = tx.Tenants().List(ctx, p)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("list tenants: %w", err)
		}
		for _, t := range ts {
			for {
				var n int
				err := st.InTx(ctx, func(tx store.Tx) error {
					tt, err := tx.ForTenant(t.ID)
					if err != nil {
						return err
					}
					n, err = tt.ErrorReports().DeleteReceivedBefore(ctx, before, retentionBatch)
					return err
				})
				if err != nil {
					return total, fmt.Errorf("delete old error reports of tenant %s: %w", t.ID, err)
				}
				total += n
				if n < retentionBatch {
					break
				}
			}
		}
		if len(ts) < p.Limit {
			return total, nil
		}
		p.After = string(ts[len(ts)-1].ID)
	}
}
