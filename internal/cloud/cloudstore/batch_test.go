package cloudstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/telemetry"
	"github.com/moat-iot/moat/internal/testenv"
)

// WriteBatch writes a batch in multi-row statements, chunked under each database's
// parameter limit (SQLite 32766, PostgreSQL 65535). These tests write batches larger than
// one statement's chunk and check that every row, and every summary, is stored once.

func TestSQLite_WriteBatchLargerThanOneStatement(t *testing.T) {
	t.Parallel()
	testWriteBatchLargerThanOneStatement(t, openSQLite(t))
}

func TestPostgres_WriteBatchLargerThanOneStatement(t *testing.T) {
	t.Parallel()
	testenv.PostgresDSN(t)
	testWriteBatchLargerThanOneStatement(t, openPostgres(t))
}

func TestSQLite_WriteBatchRedeliveredMixStoresNewOnly(t *testing.T) {
	t.Parallel()
	testWriteBatchRedeliveredMix(t, openSQLite(t))
}

func TestPostgres_WriteBatchRedeliveredMixStoresNewOnly(t *testing.T) {
	t.Parallel()
	testenv.PostgresDSN(t)
	testWriteBatchRedeliveredMix(t, openPostgres(t))
}

// bigBatch is n telemetry records (seqs from first) alternating devA and devB, three
// metrics each: 7,200 reading rows (72,000 parameters) for n = 2400, more than one
// statement may carry on either database.
func bigBatch(first uint64, n int) []cloudstore.Record {
	var recs []cloudstore.Record
	for i := range n {
		dev := devA
		if i%2 == 1 {
			dev = devB
		}
		j := i / 2
		at := t0.Add(time.Duration(j) * time.Minute)
		recs = append(recs, tele(first+uint64(i), dev, at, fmt.Sprintf("c%03d", j/4), "drying",
			map[string]float64{"a": float64(j), "b": 1, "c": 2}))
	}
	return recs
}

type totals struct {
	readings              int
	hourCount, cycleCount int64
	hourSum, cycleSum     float64
	hourRows, cycleRows   int
	events                int
}

func storedTotals(t *testing.T, s *cloudstore.Store, dev string) totals {
	t.Helper()
	ctx := t.Context()
	var tot totals
	q := cloudstore.TelemetryQuery{Device: dev, Limit: 1000}
	for {
		page, err := s.Telemetry(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		tot.readings += len(page.Readings)
		if page.Next == nil {
			break
		}
		q.After = page.Next
	}
	hours, err := s.HourlySummaries(ctx, dev, time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hours {
		tot.hourRows++
		tot.hourCount += h.Count
		tot.hourSum += h.Sum
	}
	cycles, err := s.CycleSummaries(ctx, dev, time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cycles {
		tot.cycleRows++
		tot.cycleCount += c.Count
		tot.cycleSum += c.Sum
	}
	var after *cloudstore.StoredEvent
	for {
		evs, err := s.Events(ctx, dev, time.Time{}, time.Time{}, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		tot.events += len(evs)
		if len(evs) < 1000 {
			break
		}
		after = &evs[len(evs)-1]
	}
	return tot
}

func testWriteBatchLargerThanOneStatement(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	batch := bigBatch(1, 2400)
	for i := range 1200 { // 10,800 event parameters: more than one statement's rows
		batch = append(batch, cloudstore.Record{Seq: uint64(3000 + i), Device: devA, Product: "dw100", ReceivedAt: t0,
			Event: &telemetry.Event{V: 1, Time: t0.Add(time.Duration(i) * time.Second), Name: "door_open", Cycle: "c1"}})
	}
	res, err := s.WriteBatch(ctx, batch)
	if err != nil {
		t.Fatalf("WriteBatch(%d records) = %v", len(batch), err)
	}
	if len(res.Stored) != len(batch) || res.Duplicates != 0 || res.Stored[len(res.Stored)-1] != len(batch)-1 {
		t.Fatalf("WriteBatch = %d stored (last %d), %d duplicates; want all %d", len(res.Stored), res.Stored[len(res.Stored)-1], res.Duplicates, len(batch))
	}
	// Per device: 1,200 records, j = 0..1199 ⇒ sum of metric a = 1199·1200/2, b = 1200, c = 2400.
	wantSum := float64(1199*1200/2 + 1200 + 2400)
	want := map[string]totals{
		devA: {readings: 3600, hourCount: 3600, cycleCount: 3600, hourSum: wantSum, cycleSum: wantSum, hourRows: 20 * 3, cycleRows: 300 * 3, events: 1200},
		devB: {readings: 3600, hourCount: 3600, cycleCount: 3600, hourSum: wantSum, cycleSum: wantSum, hourRows: 20 * 3, cycleRows: 300 * 3},
	}
	for dev, w := range want {
		if diff := cmp.Diff(w, storedTotals(t, s, dev), cmp.AllowUnexported(totals{})); diff != "" {
			t.Errorf("device %.8s: stored totals (-want +got):\n%s", dev, diff)
		}
	}
}

// testWriteBatchRedeliveredMix writes a batch, then one that mixes a third of it again
// (a redelivery) with new records in the same cycles and hours, and one new record twice:
// only the new ones are stored, each once, and the summaries count them once.
func testWriteBatchRedeliveredMix(t *testing.T, s *cloudstore.Store) {
	ctx := t.Context()
	first := bigBatch(1, 2400)
	if _, err := s.WriteBatch(ctx, first); err != nil {
		t.Fatal(err)
	}
	fresh := bigBatch(10_001, 2400)
	var (
		mixed     []cloudstore.Record
		wantNew   []int
		wantDup   int
		newPerDev = map[string]int{}
	)
	for i := range 2400 {
		if i%3 == 0 {
			mixed = append(mixed, first[i])
			wantDup++
			continue
		}
		wantNew = append(wantNew, len(mixed))
		mixed = append(mixed, fresh[i])
		newPerDev[fresh[i].Device]++
	}
	mixed = append(mixed, fresh[1]) // the same message twice in one batch
	wantDup++
	res, err := s.WriteBatch(ctx, mixed)
	if err != nil {
		t.Fatalf("WriteBatch(mixed) = %v", err)
	}
	if !cmp.Equal(res.Stored, wantNew) || res.Duplicates != wantDup {
		t.Fatalf("WriteBatch(mixed) = %d stored, %d duplicates; want %d new (in batch order), %d duplicates", len(res.Stored), res.Duplicates, len(wantNew), wantDup)
	}
	for _, dev := range []string{devA, devB} {
		got := storedTotals(t, s, dev)
		wantCount := int64(3 * (1200 + newPerDev[dev]))
		if got.readings != int(wantCount) || got.hourCount != wantCount || got.cycleCount != wantCount {
			t.Errorf("device %.8s: %d readings, hourly count %d, cycle count %d; want %d each (a redelivery must not count twice)",
				dev, got.readings, got.hourCount, got.cycleCount, wantCount)
		}
		if got.hourRows != 60 || got.cycleRows != 900 {
			t.Errorf("device %.8s: %d hourly and %d cycle summaries, want 60 and 900 (new records merge into the stored rows)", dev, got.hourRows, got.cycleRows)
		}
	}
	// Written again, the whole mixed batch is a no-op.
	res, err = s.WriteBatch(ctx, mixed)
	if err != nil || len(res.Stored) != 0 || res.Duplicates != len(mixed) {
		t.Errorf("WriteBatch(mixed again) = %d stored, %d duplicates, %v; want none stored", len(res.Stored), res.Duplicates, err)
	}
}
