package ingest

import (
	"context"
	"fmt"
	"time"
)

// Prune deletes raw readings older than RawRetention and summaries and events older than
// SummaryRetention, as of now, in chunks. Safe to run beside Run.
func (in *Ingest) Prune(ctx context.Context, now time.Time) error {
	raw, err := in.deps.Store.DeleteRawBefore(ctx, now.Add(-in.cfg.RawRetention), in.cfg.PruneChunk)
	if err != nil {
		return fmt.Errorf("prune raw readings: %w", err)
	}
	sums, err := in.deps.Store.DeleteSummariesBefore(ctx, now.Add(-in.cfg.SummaryRetention), in.cfg.PruneChunk)
	if err != nil {
		return fmt.Errorf("prune summaries: %w", err)
	}
	if raw+sums > 0 {
		in.log.InfoContext(ctx, "pruned telemetry", "raw_readings", raw, "summary_rows", sums)
	}
	return nil
}

// RunPruner calls Prune every interval until ctx ends, logging failures.
func (in *Ingest) RunPruner(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := in.Prune(ctx, in.deps.Now()); err != nil && ctx.Err() == nil {
			in.log.WarnContext(ctx, "prune telemetry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
