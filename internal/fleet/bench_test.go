package fleet_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/testenv"
)

// BenchmarkAttest measures the server's side of one attestation at a time, on SQLite and
// on PostgreSQL (MOAT_TEST_POSTGRES_DSN): issue the nonce (stateless: no write), then
// verify the evidence, check the policy against the registry and catalog, issue the
// certificate and record it with the device's new state and the spent nonce (one durable
// commit, which a lone attestation does not share). The device's own signing is outside
// the timer. It reports attestations per second and the ratio to the raw crypto of one
// P-256 verify plus one P-256 sign, measured in the same run (x-raw-crypto: 1 would be
// free I/O and policy).
func BenchmarkAttest(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		b.Run(db, func(b *testing.B) {
			p, devs, ms := attestBench(b, db)
			svc := p.Server.Fleet()
			ctx := context.Background()
			raw := rawCrypto(b)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			i := 0
			for b.Loop() {
				d := devs[i%len(devs)]
				i++
				n, err := svc.NewNonce(ctx, d.Key.ID())
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				c := cpuTime()
				ev, err := attest.Sign(d.Key, attest.Evidence{DeviceID: d.ID, Nonce: n.Nonce, Time: time.Now(), Measurements: ms})
				if err != nil {
					b.Fatal(err)
				}
				cpu0 += cpuTime() - c // the device's signing is not the server's
				b.StartTimer()
				if _, err := svc.Attest(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportRatio(b, raw, cpu0)
		})
	}
}

// attestBench is a platform on db with an OS and an app published and 256 claimed devices.
func attestBench(b *testing.B, db string) (*testenv.Platform, []testenv.Device, []attest.Measurement) {
	var opts []testenv.ServerOption
	if db == "postgres" {
		opts = append(opts, testenv.WithDatabase(testenv.FreshPostgresDatabase(b)))
	}
	p := testenv.NewPlatform(b, opts...)
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	const devices = 256
	devs := make([]testenv.Device, devices)
	ids := make([]string, devices)
	for i := range devs {
		devs[i] = p.NewDevice(false, "")
		ids[i] = devs[i].ID
	}
	if _, err := p.Admin.ClaimDevices(context.Background(), p.Tenant, client.DeviceClaim{DeviceIDs: ids}); err != nil {
		b.Fatal(err)
	}
	return p, devs, []attest.Measurement{osImg.Measurement(), app.Measurement()}
}

// reportRatio reports the rate of the benchmark's operations and its ratio to the raw
// crypto's (x-raw-crypto), and the CPU time per operation, every goroutine of the process
// counted, and its ratio to the raw crypto's CPU time (x-raw-crypto-cpu). cpu0 is
// cpuTime() when the timer started.
func reportRatio(b *testing.B, raw rawCost, cpu0 time.Duration) {
	cpuNs := float64((cpuTime() - cpu0).Nanoseconds()) / float64(b.N)
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(1e9/ns, "attestations/s")
	b.ReportMetric(1e9/raw.ns, "raw-crypto/s")
	b.ReportMetric(raw.ns/ns, "x-raw-crypto")
	if cpuNs > 0 && raw.cpuNs > 0 {
		b.ReportMetric(cpuNs/1e3, "cpu-µs/op")
		b.ReportMetric(raw.cpuNs/cpuNs, "x-raw-crypto-cpu")
	}
}

// rawCost is the cost of one ECDSA P-256 verify plus one sign on one core: wall and CPU
// time in ns.
type rawCost struct{ ns, cpuNs float64 }

// rawCrypto measures rawCost.
func rawCrypto(b *testing.B) rawCost {
	k, err := keys.Generate()
	if err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256([]byte("evidence"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, sum[:])
	if err != nil {
		b.Fatal(err)
	}
	const n = 1000
	start, cpu0 := time.Now(), cpuTime()
	for range n {
		if !ecdsa.VerifyASN1(&k.PublicKey, sum[:], sig) {
			b.Fatal("baseline signature does not verify")
		}
		if _, err := ecdsa.SignASN1(rand.Reader, k, sum[:]); err != nil {
			b.Fatal(err)
		}
	}
	return rawCost{ns: float64(time.Since(start).Nanoseconds()) / n, cpuNs: float64((cpuTime() - cpu0).Nanoseconds()) / n}
}

// BenchmarkAttestParallel is BenchmarkAttest with 16 devices attesting at once per core,
// as a fleet does after a power cut; their writes share commits (group commit). The
// devices' evidence is signed before the timer starts (each with a fresh nonce), so the
// figure is the server's alone, as in BenchmarkAttest; the baseline is one core's raw
// crypto, so on 2 cores a ratio above 1 is possible.
func BenchmarkAttestParallel(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		b.Run(db, func(b *testing.B) {
			p, devs, ms := attestBench(b, db)
			svc := p.Server.Fleet()
			ctx := context.Background()
			evs := make(chan []byte, b.N)
			for i := range b.N {
				d := devs[i%len(devs)]
				n, err := svc.NewNonce(ctx, d.Key.ID())
				if err != nil {
					b.Fatal(err)
				}
				ev, err := attest.Sign(d.Key, attest.Evidence{DeviceID: d.ID, Nonce: n.Nonce, Time: time.Now(), Measurements: ms})
				if err != nil {
					b.Fatal(err)
				}
				evs <- ev
			}
			close(evs)
			raw := rawCrypto(b)
			b.SetParallelism(16)
			b.ResetTimer()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := svc.Attest(ctx, <-evs); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			reportRatio(b, raw, cpu0)
		})
	}
}
