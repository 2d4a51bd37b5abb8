#!/usr/bin/env bash
# Issue 13's performance aim for `moat cloud`: durable telemetry messages per second through
# the whole path (200 attested devices on paho, QoS 1, stored with SyncAlways, DW100 rules)
# next to the same broker's publish-to-subscribe rate with storage and rules off, in one run
# (internal/cloud BenchmarkCloud_Telemetry; docs/cloud-performance.md explains the figures).
#
#   MOAT_BENCH_MESSAGES   messages per round, spread over the 200 devices (default 20000)
#   MOAT_BENCH_WINDOW     unacknowledged messages per connection (default 8)
#   MOAT_BENCH_ROUNDS     rounds, pooled (default 1)
#   MOAT_TEST_POSTGRES_DSN  also measure the cloud on PostgreSQL (a fresh database)
#   MOAT_BENCH_FULL_SYNC=always  run the whole path with --sync-always (an fsync per message
#                         before its PUBACK) instead of the default
#   MOAT_BENCH_PROFILE=1  also write a CPU profile of the whole path alone to cloud-bench.cpu
#                         (with the test binary cloud-bench.test) and print its top
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds=${MOAT_BENCH_ROUNDS:-1}
echo "--- BenchmarkCloud_Telemetry: ${MOAT_BENCH_MESSAGES:-20000} messages from 200 devices, window ${MOAT_BENCH_WINDOW:-8}, ${rounds} round(s); $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "${MOAT_TEST_POSTGRES_DSN:-}" ] || echo "(MOAT_TEST_POSTGRES_DSN is not set: SQLite only)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! go test -count=1 -run '^$' -bench 'BenchmarkCloud_Telemetry' -benchtime "${rounds}x" -timeout 30m ./internal/cloud >"$out" 2>&1; then
	cat "$out" >&2
	exit 1
fi
# The summary each sub-benchmark logs, then the raw metrics line for benchstat.
grep -E '^(Benchmark|    bench_test.go|      |          )' "$out" | sed -e 's/^    bench_test.go:[0-9]*: /  /' -e '/^ *$/d'

if [ "${MOAT_BENCH_PROFILE:-}" = 1 ]; then
	echo "--- CPU profile of the whole path alone (SQLite): cloud-bench.cpu"
	MOAT_BENCH_FULL_ONLY=1 MOAT_TEST_POSTGRES_DSN= go test -count=1 -run '^$' -bench 'BenchmarkCloud_Telemetry/sqlite' -benchtime 1x \
		-cpuprofile cloud-bench.cpu -o cloud-bench.test ./internal/cloud >/dev/null
	go tool pprof -top -cum -nodecount 35 cloud-bench.test cloud-bench.cpu 2>/dev/null | sed -n '4,45p'
fi
