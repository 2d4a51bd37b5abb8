package server

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/tenant"
)

// TestErrorReportRetention_DeletesOldAndKeepsIssuesExact: the retention job deletes every
// tenant's reports older than the retention, in more than one batch, and the issues then
// count only the reports left.
func TestErrorReportRetention_DeletesOldAndKeepsIssuesExact(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "moat.db"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cutoff := now.Add(-DefaultErrorReportRetention)
	report := func(i int, msg string) errreport.Report {
		return errreport.Report{ID: errreport.NewID(now.Add(time.Duration(i) * time.Millisecond)), Kind: errreport.Agent, At: now,
			ImagePath: "os/moat/1.0.0", ImageVersion: "1.0.0", Code: "x", Message: msg}
	}
	const old = retentionBatch + 300 // per tenant: more than one batch
	tenants := []tenant.ID{"tnt_0190000000000000000000000000000a", "tnt_0190000000000000000000000000000b"}
	var keep errreport.Report
	err = st.InTx(ctx, func(tx store.Tx) error {
		for ti, tid := range tenants {
			if err := tx.Tenants().Create(ctx, tenant.Tenant{ID: tid, Name: fmt.Sprint("t", ti), CreatedAt: now, UpdatedAt: now, Version: 1}); err != nil {
				return err
			}
			id := device.ID(fmt.Sprintf("%064x", ti))
			if err := tx.Devices().Register(ctx, device.Device{ID: id, PublicKeyPEM: "key", RegisteredAt: now, Floors: map[string]uint32{}, Version: 1}); err != nil {
				return err
			}
			if _, err := tx.Devices().Claim(ctx, id, tid, now); err != nil {
				return err
			}
			tt, err := tx.ForTenant(tid)
			if err != nil {
				return err
			}
			for i := range old {
				// Two issues: one only old reports have, one old and new ones share.
				msg := []string{"gone", "stays"}[i%2]
				if err := tt.ErrorReports().Add(ctx, id, report(i, msg), cutoff.Add(-time.Duration(old-i)*time.Minute)); err != nil {
					return err
				}
			}
			keep = report(old, "stays")
			if err := tt.ErrorReports().Add(ctx, id, keep, cutoff); err != nil { // at the cutoff: kept
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := pruneErrorReports(ctx, st, cutoff)
	if err != nil || n != 2*old {
		t.Fatalf("pruneErrorReports = %d, %v; want %d, nil", n, err, 2*old)
	}
	sig := errreport.Signature(keep)
	for _, tid := range tenants {
		err := st.InReadTx(ctx, func(tx store.Tx) error {
			tt, err := tx.ForTenant(tid)
			if err != nil {
				return err
			}
			issues, err := tt.ErrorReports().ListIssues(ctx, errreport.IssueFilter{}, store.Page{})
			if err != nil {
				return err
			}
			want := []errreport.Issue{{ID: errreport.IssueID(sig), Signature: sig, Kind: errreport.Agent, ImageName: "os/moat",
				Message: "stays", Reports: 1, Devices: 1, FirstSeen: cutoff, LastSeen: cutoff}}
			if d := cmp.Diff(want, issues); d != "" {
				t.Errorf("tenant %s: ListIssues after retention (-want +got):\n%s", tid, d)
			}
			is, err := tt.ErrorReports().GetIssue(ctx, want[0].ID, now)
			if err != nil {
				return err
			}
			if d := cmp.Diff([]errreport.IssueVersion{{Version: "1.0.0", Reports: 1}}, is.Versions); d != "" {
				t.Errorf("tenant %s: versions after retention (-want +got):\n%s", tid, d)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, err := pruneErrorReports(ctx, st, cutoff); err != nil || n != 0 {
		t.Errorf("pruneErrorReports again = %d, %v; want 0, nil", n, err)
	}
}

func TestConfig_RefusesErrorReportRetentionOutOfRange(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, time.Hour, 11 * 365 * 24 * time.Hour} {
		c := DefaultConfig()
		c.ErrorReportRetention = d
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(error-report-retention %s) = nil, want an error", d)
		}
	}
}
