package cloud_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moat-iot/moat/internal/cloud"
	"github.com/moat-iot/moat/internal/cloud/broker"
	"github.com/moat-iot/moat/internal/localtls"
	"github.com/moat-iot/moat/internal/testenv"
)

// benchDevices is the number of device connections the aim names.
const benchDevices = 200

// BenchmarkCloud_Telemetry is issue 13's performance aim, measured in one run: durable
// telemetry messages per second through the whole path of `moat cloud` next to the same
// broker's publish-to-subscribe rate with storage and rules off.
//
// Load, the same for both: benchDevices attested DW100s (certificates from the real
// security service), one paho connection each in this process, as the agent connects;
// each publishes MOAT_BENCH_MESSAGES/benchDevices valid v1 telemetry payloads
// (drying-phase readings) with QoS 1, at most MOAT_BENCH_WINDOW unacknowledged per
// connection, all connections at once. Every message's publish → PUBACK latency is
// measured on the device side.
//
//   - full: cloud.Open as `moat cloud` runs it (SQLite in its data directory, or
//     PostgreSQL in the postgres sub-benchmark; the default durability, each message
//     written before its PUBACK and fsynced every second; the DW100 rules
//     of examples/dw100/rules.yaml). The clock stops when the ingest's
//     moat_cloud_ingest_stored_total counts every message (the counter moves after the
//     batch's transaction commits, just before the batch's samples go to the rules, which
//     run on the same goroutine: every batch but the last has been through the rules).
//     The per-device rate limit is raised (device-rate 10000/s, device-burst 100000) so
//     that it drops none of the benchmark's messages; a drop fails the benchmark.
//   - broker: broker.Open, the same package and stream configuration, with SyncAlways off,
//     no ingest, no rules, no database; a plain NATS subscriber on the in-process
//     connection (devices.*.telemetry) counts the messages. nats-server still stores each
//     QoS 1 message in the MOAT_DEVICES stream (file storage, no fsync per message) before
//     it sends the PUBACK: that is how it acknowledges QoS 1. The clock stops when the
//     subscriber has every message and every PUBACK is in.
//   - broker_sync: the broker alone as in broker, but SyncAlways on (an fsync per message,
//     moat cloud --sync-always): not an aim, it shows what that option costs.
//
// Reported: msgs/s and p50/p99 PUBACK latency of each, full/broker rate ratio (aim ≥ 0.5)
// and the full path's p99 against 2 × broker p99 + 10 ms (aim: p99_vs_aim ≤ 1).
func BenchmarkCloud_Telemetry(b *testing.B) {
	total := benchEnvInt(b, "MOAT_BENCH_MESSAGES", 20_000)
	window := benchEnvInt(b, "MOAT_BENCH_WINDOW", 8)
	perDevice := max(1, total/benchDevices)
	// MOAT_BENCH_FULL_ONLY=1 measures the whole path alone, for a CPU profile of it
	// (nats-server labels its stream goroutines itself, so -tagfocus cannot tell the
	// broker runs' stream work from the full path's); it reports no ratios.
	fullOnly := os.Getenv("MOAT_BENCH_FULL_ONLY") == "1"
	// MOAT_BENCH_FULL_SYNC=always runs the whole path with --sync-always (an fsync per
	// message before its PUBACK) instead of the default (docs/cloud-performance.md).
	fullSync := os.Getenv("MOAT_BENCH_FULL_SYNC") == "always"
	if fullSync {
		b.Log("MOAT_BENCH_FULL_SYNC=always: the full path runs with --sync-always (not the default)")
	}
	start := time.Now()
	fleet := newBenchFleet(b, benchDevices)
	b.Logf("%d devices attested in %s; %d messages each, window %d, %d CPUs, GOMAXPROCS %d",
		benchDevices, time.Since(start).Round(time.Millisecond), perDevice, window, runtime.NumCPU(), runtime.GOMAXPROCS(0))

	databases := []struct{ name, database string }{{"sqlite", ""}}
	if os.Getenv("MOAT_TEST_POSTGRES_DSN") != "" {
		databases = append(databases, struct{ name, database string }{"postgres", "postgres"})
	}
	for _, db := range databases {
		b.Run(db.name, func(b *testing.B) {
			var broker, brokerSync, full []loadResult
			for round := range b.N {
				b.StopTimer()
				msgs := payloads(b, fleet.devices, perDevice, round)
				b.StartTimer()
				// Each part runs under a pprof label (bench=broker|broker_sync|full) that every
				// goroutine it starts inherits, nats-server's and the cloud's included, so that
				// `go tool pprof -tagfocus bench=full` shows the whole path alone.
				if !fullOnly {
					labelled(b, "broker", func() { broker = append(broker, fleet.runBroker(b, false, msgs, window)) })
					labelled(b, "broker_sync", func() { brokerSync = append(brokerSync, fleet.runBroker(b, true, msgs, window)) })
				}
				database := db.database
				if database == "postgres" {
					b.StopTimer()
					database = testenv.FreshPostgresDatabase(b)
					b.StartTimer()
				}
				labelled(b, "full", func() { full = append(full, fleet.runCloud(b, database, fullSync, msgs, window)) })
			}
			reportBench(b, merge(broker), merge(brokerSync), merge(full))
		})
	}
}

func labelled(b *testing.B, part string, fn func()) {
	pprof.Do(b.Context(), pprof.Labels("bench", part), func(context.Context) { fn() })
}

func benchEnvInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// merge pools rounds: total messages over total time, every latency.
func merge(rs []loadResult) loadResult {
	var m loadResult
	for _, r := range rs {
		m.msgs += r.msgs
		m.elapsed += r.elapsed
		m.acked += r.acked
		m.pubacks = append(m.pubacks, r.pubacks...)
	}
	return m
}

func reportBench(b *testing.B, base, sync, full loadResult) {
	b.Helper()
	if base.msgs == 0 {
		fp50, fp99 := percentile(full.pubacks, 50), percentile(full.pubacks, 99)
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(full.rate(), "full_msgs/s")
		b.ReportMetric(ms(fp50), "full_p50_ms")
		b.ReportMetric(ms(fp99), "full_p99_ms")
		b.Logf("full path only: %.0f msgs/s, PUBACK p50 %.1f ms, p99 %.1f ms (%d msgs, last PUBACK at %s, last stored at %s)",
			full.rate(), ms(fp50), ms(fp99), full.msgs, full.acked.Round(time.Millisecond), full.elapsed.Round(time.Millisecond))
		return
	}
	bp50, bp99 := percentile(base.pubacks, 50), percentile(base.pubacks, 99)
	sp50, sp99 := percentile(sync.pubacks, 50), percentile(sync.pubacks, 99)
	fp50, fp99 := percentile(full.pubacks, 50), percentile(full.pubacks, 99)
	aim := 2*bp99 + 10*time.Millisecond
	b.ReportMetric(0, "ns/op") // one op is a whole round: meaningless here
	b.ReportMetric(full.rate(), "full_msgs/s")
	b.ReportMetric(ms(fp50), "full_p50_ms")
	b.ReportMetric(ms(fp99), "full_p99_ms")
	b.ReportMetric(base.rate(), "broker_msgs/s")
	b.ReportMetric(ms(bp50), "broker_p50_ms")
	b.ReportMetric(ms(bp99), "broker_p99_ms")
	b.ReportMetric(sync.rate(), "broker_sync_msgs/s")
	b.ReportMetric(ms(sp99), "broker_sync_p99_ms")
	b.ReportMetric(full.rate()/base.rate(), "rate_ratio")
	b.ReportMetric(float64(fp99)/float64(aim), "p99_vs_aim")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	b.Logf("\n"+
		"  full path (stored, rules): %8.0f msgs/s  PUBACK p50 %7.1f ms  p99 %7.1f ms  (%d msgs, last PUBACK at %s, last stored at %s)\n"+
		"  broker only, sync off:     %8.0f msgs/s  PUBACK p50 %7.1f ms  p99 %7.1f ms\n"+
		"  broker only, sync always:  %8.0f msgs/s  PUBACK p50 %7.1f ms  p99 %7.1f ms\n"+
		"  rate ratio full/broker %.2f (aim ≥ 0.50: %s); full p99 %.1f ms vs aim 2×%.1f+10 = %.1f ms (%s)",
		full.rate(), ms(fp50), ms(fp99), full.msgs, full.acked.Round(time.Millisecond), full.elapsed.Round(time.Millisecond),
		base.rate(), ms(bp50), ms(bp99),
		sync.rate(), ms(sp50), ms(sp99),
		full.rate()/base.rate(), verdict(full.rate() >= base.rate()/2), ms(fp99), ms(bp99), ms(aim), verdict(fp99 <= aim))
}

// runBroker measures the broker alone: broker.Open with the cloud's stream
// configuration, no ingest, no rules, no database; a NATS subscriber counts.
func (f *benchFleet) runBroker(b *testing.B, syncAlways bool, msgs [][][]byte, window int) loadResult {
	b.Helper()
	b.StopTimer()
	dir := b.TempDir()
	cert, caPEM, err := localtls.Load(filepath.Join(dir, "tls"), "moat cloud bench", []string{"localhost", "127.0.0.1"}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	chain, err := os.ReadFile(f.chain)
	if err != nil {
		b.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	cfg := broker.DefaultConfig()
	cfg.MQTTAddr, cfg.ServerCert, cfg.DeviceCAs = "127.0.0.1:0", cert, chain
	cfg.StoreDir, cfg.Now = filepath.Join(dir, "jetstream"), time.Now
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.SyncAlways = syncAlways
	br, err := broker.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := br.Close(); err != nil {
			b.Errorf("broker close: %v", err)
		}
		if b.Failed() {
			b.Logf("broker log:\n%s", logs.String())
		}
	}()
	nc, err := br.Conn()
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var got counter
	sub, err := nc.Subscribe("devices.*.telemetry", func(*nats.Msg) { got.n.Add(1) })
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	clients := connectAll(b, br.MQTTAddr().String(), caPEM, f.devices)
	want := int64(len(msgs) * len(msgs[0]))
	b.StartTimer()
	r := publishAll(b, clients, f.devices, msgs, window, func() (int64, error) { return got.n.Load(), nil })
	b.StopTimer()
	if n := got.n.Load(); n != want {
		b.Fatalf("subscriber got %d messages, want %d", n, want)
	}
	for _, c := range clients {
		c.Disconnect(0)
	}
	return r
}

// runCloud measures the whole path: `moat cloud` as cloud.Open builds it, with the DW100
// rules, the default durability (MOAT_BENCH_FULL_SYNC=always: --sync-always); done when the ingest has stored every message.
func (f *benchFleet) runCloud(b *testing.B, database string, syncAlways bool, msgs [][][]byte, window int) loadResult {
	b.Helper()
	b.StopTimer()
	dir := b.TempDir()
	cfg := cloud.DefaultConfig()
	cfg.Addr, cfg.MQTTAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir, cfg.Database = filepath.Join(dir, "cloud"), database
	cfg.DeviceCA, cfg.Server, cfg.ServerCA = f.chain, f.p.Server.URL, f.serverCA
	cfg.SyncAlways = syncAlways
	cfg.Rules = []string{filepath.Join("..", "..", "examples", "dw100", "rules.yaml")}
	// The benchmark's devices publish as fast as the cloud takes it: the per-device limit
	// (10/s, burst 100 by default) would drop nearly all of it.
	cfg.DeviceRate, cfg.DeviceBurst = 10_000, 100_000
	cfg.MaxMessagesPerDevice = max(cfg.MaxMessagesPerDevice, int64(2*len(msgs[0])))
	logs := &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := cloud.Open(b.Context(), cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- c.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			b.Errorf("Serve = %v", err)
		}
		if b.Failed() {
			b.Logf("cloud log:\n%s", logs.String())
		}
	}()
	scraper := newMetricsScraper(b, c.URL, c.CAPEM)
	clients := connectAll(b, c.MQTTAddr, c.CAPEM, f.devices)
	want := int64(len(msgs) * len(msgs[0]))
	var stored, dropped int64
	b.StartTimer()
	r := publishAll(b, clients, f.devices, msgs, window, func() (int64, error) {
		var err error
		stored, dropped, err = scraper.counts(b.Context())
		return stored + dropped, err
	})
	b.StopTimer()
	if stored != want || dropped != 0 {
		b.Fatalf("ingest stored %d and dropped %d messages, want all %d stored", stored, dropped, want)
	}
	stats, err := scraper.ingestStats(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.Log(stats)
	for _, cl := range clients {
		cl.Disconnect(0)
	}
	return r
}
