package cloudstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/testenv"
)

// BenchmarkWriteBatch writes batches of 500 telemetry messages shaped like
// BenchmarkCloud_Telemetry's (200 devices, three metrics, cycles of 20 readings) and
// reports messages per second through WriteBatch alone.
func BenchmarkWriteBatch(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchWriteBatch(b, openSQLiteB(b)) })
	b.Run("postgres", func(b *testing.B) {
		testenv.PostgresDSN(b)
		s, err := cloudstore.Open(b.Context(), cloudstore.Config{Database: cloudstore.Postgres, PostgresDSN: testenv.FreshPostgresDatabase(b)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		benchWriteBatch(b, s)
	})
}

func openSQLiteB(b *testing.B) *cloudstore.Store {
	s, err := cloudstore.OpenSQLite(b.Context(), b.TempDir()+"/cloud.db")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchWriteBatch(b *testing.B, s *cloudstore.Store) {
	const batchSize, devices = 500, 200
	devs := make([]string, devices)
	for i := range devs {
		devs[i] = fmt.Sprintf("%064x", i+1)
	}
	seq := uint64(0)
	n := 0
	start := time.Now()
	for b.Loop() {
		batch := make([]cloudstore.Record, 0, batchSize)
		for range batchSize {
			seq++
			k := int(seq) / devices // the device's message number
			batch = append(batch, tele(seq, devs[int(seq)%devices], t0.Add(time.Duration(k)*time.Second),
				fmt.Sprintf("c%d", k/20), "drying", map[string]float64{"drying_temp": 60, "water_temp": 55, "rinse_agent": 40}))
		}
		if _, err := s.WriteBatch(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
		n += batchSize
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")

}
