#!/usr/bin/env bash
# Issue 15's load benchmark with `moat sim`: update latency and the reconnect storm for N
# connected devices, each next to the ideal measured in the same run.
#
#   scripts/load.sh [--devices N] [--ramp R/s] [--postgres DSN] [--no-storm] [--profile] [--keep]
#                   [--cloud [--telemetry-interval D]]
#
# It builds moat, starts a `moat server` (SQLite in a temporary directory, or PostgreSQL with
# --postgres DSN: give a fresh database) with --pprof on loopback, sets up the platform and
# tenant Contoso with product DW100 and app 1.0.0 deployed to DW100/Production through the
# CLI, runs `moat sim` with N devices (default 10000) and waits until all of them wait in the
# update long-poll. Then:
#
#  1. memory: the server's heap and goroutine stacks in use (after a GC, from
#     /debug/pprof/heap?debug=1) with N devices waiting, minus the same before the fleet
#     came, per waiting device; and both processes' RSS;
#  2. update latency: it deploys app 2.0.0 and times, from `moat deployment create`, how long
#     until the devices hold the new verified assignment (p50, p99, last, from the
#     simulator's statistics), next to the ideal N / the director's signing rate
#     (BenchmarkIssueParallel in internal/director, run for N assignments right after);
#  3. the reconnect storm (unless --no-storm): SIGUSR1 makes every device's certificate
#     expire at once; it times until all hold a new one (p50, p99, last), next to the ideal
#     N / the attestation rate (BenchmarkAttestParallel in internal/fleet, on the same
#     database kind, run for N attestations right after), and counts 503 answers and
#     devices that gave up.
#
# --cloud also starts a `moat cloud` (SQLite in WORK/cloud even with --postgres; its API and
# MQTT listeners on loopback, its TLS CA in WORK/cloud/tls/ca.pem, the tenant's device CA
# from `moat ca-certificate download`, no rules) and gives the simulator --cloud
# mqtts://... --cloud-ca ... --telemetry-interval D (default 10s). Once every device waits
# and holds its MQTT session, it reports before the update: the telemetry messages the
# cloud stored per second over 30 s (moat_cloud_ingest_stored_total on its /metrics: the
# simulator sends no events, and nothing asks for diagnostics without rules) next to the
# N / D the fleet publishes; the cloud's RSS per connected device over its RSS before the
# fleet came (RSS only: moat cloud has no --pprof); and the simulator's RSS.
#
# --profile saves the server's heap and goroutines with the fleet waiting (heap-waiting.pb.gz,
# goroutine-waiting.txt) and 20 s CPU profiles of the server from the start of the
# deployment and of the storm in WORK (cpu-update.pb.gz, cpu-storm.pb.gz; go tool pprof -top FILE) and keeps
# WORK. Hooks, if MOAT_LOAD_HOOKS=FILE defines them, run after each step: after_waiting,
# after_update, after_storm; each gets MOAT_SERVER, MOAT_DEVICE_SERVER, MOAT_CONFIG_DIR, STATS,
# WORK, SERVER_PID, SIM_PID, PPROF, N. MOAT_LOAD_TIMEOUT (seconds) bounds the wait for every
# device to wait (default N/20 + 300); MOAT_SIM_LOG_LEVEL sets the simulator's log level
# (its log is WORK/sim.err; --keep keeps WORK).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=10000
RAMP=500/s
DSN=""
KEEP=0
STORM=1
PROFILE=0
CLOUD=0
TELEMETRY_INTERVAL=10s
while [ $# -gt 0 ]; do
	case "$1" in
	--devices) N=$2; shift 2 ;;
	--ramp) RAMP=$2; shift 2 ;;
	--postgres) DSN=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--no-storm) STORM=0; shift ;;
	--profile) PROFILE=1; KEEP=1; shift ;;
	--cloud) CLOUD=1; shift ;;
	--telemetry-interval) TELEMETRY_INTERVAL=$2; shift 2 ;;
	*) echo "usage: $0 [--devices N] [--ramp R/s] [--postgres DSN] [--no-storm] [--profile] [--keep] [--cloud [--telemetry-interval D]]" >&2; exit 2 ;;
	esac
done

after_waiting() { :; }
after_update() { :; }
after_storm() { :; }
if [ -n "${MOAT_LOAD_HOOKS:-}" ]; then
	# shellcheck source=/dev/null
	. "$MOAT_LOAD_HOOKS"
fi

WORK=$(mktemp -d)
SERVER_PID=""
SIM_PID=""
CLOUD_PID=""
cleanup() {
	[ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
	[ -n "$CLOUD_PID" ] && kill "$CLOUD_PID" 2>/dev/null && wait "$CLOUD_PID" 2>/dev/null
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

go build -o "$WORK/moat" ./cmd/moat
# The benchmarks that give the ideals, built before anything runs.
go test -c -o "$WORK/director.test" ./internal/director
go test -c -o "$WORK/fleet.test" ./internal/fleet
moat() { "$WORK/moat" "$@"; }
export MOAT_CONFIG_DIR="$WORK/config"
STATS="$WORK/stats.json"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# inuse_bytes: the server's heap and goroutine stacks in use, after a GC; with "live", its
# live heap objects (HeapAlloc, right after the GC) and stacks: in use less the free room
# in the heap's spans (fragmentation), which the runtime keeps for the next allocations.
inuse_bytes() {
	curl -sf "http://$PPROF/debug/pprof/heap?gc=1&debug=1" |
		awk -v live="${1:-}" '/^# HeapInuse = / {h=$4} /^# HeapAlloc = / {a=$4} /^# StackInuse = / {s=$4} END {print (live == "live" ? a : h) + s}'
}
PROF_PID=""
profile() { # profile NAME: with --profile, a 20 s CPU profile of the server into WORK/NAME.pb.gz
	[ "$PROFILE" = 1 ] || return 0
	curl -sf -o "$WORK/$1.pb.gz" "http://$PPROF/debug/pprof/profile?seconds=20" &
	PROF_PID=$!
}
wait_profile() { [ -z "$PROF_PID" ] || wait "$PROF_PID" || true; PROF_PID=""; }
now() { python3 -c 'import time; print(time.time())'; }
# bench BINARY PATTERN N METRIC: run a benchmark for N iterations and print METRIC.
bench() {
	"$1" -test.run '^$' -test.bench "$2" -test.benchtime "$3x" 2>&1 | tee -a "$WORK/bench.out" |
		awk -v m="$4" '/^Benchmark/ {for (i = 2; i <= NF; i++) if ($i == m) print $(i - 1)}' | tail -1
}
# stat FIELD: a field of the simulator's last statistics (jq-free: python).
stat() { python3 -c "import json,sys; s=json.load(open('$STATS')); print(eval(sys.argv[1]))" "$1"; }
wait_for() { # wait_for DESCRIPTION PYTHON-CONDITION-ON-s TIMEOUT-SECONDS
	local deadline=$((SECONDS + $3))
	until [ -s "$STATS" ] && [ "$(stat "$2")" = True ]; do
		if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $1; last statistics: $(cat "$STATS" 2>/dev/null)" >&2; tail -5 "$WORK/sim.err" >&2; exit 1; fi
		kill -0 "$SIM_PID" || { echo "moat sim exited" >&2; exit 1; }
		sleep 0.2
	done
}

cloud_note=""
[ "$CLOUD" = 1 ] && cloud_note="; moat cloud, telemetry every $TELEMETRY_INTERVAL"
echo "--- moat load: $N devices, ramp $RAMP, database ${DSN:+PostgreSQL}${DSN:-SQLite}; $(nproc) CPUs$cloud_note"
ADDR=127.0.0.1:$(free_port)
DADDR=127.0.0.1:$(free_port)
PPROF=127.0.0.1:$(free_port)
server_args=(server --data "$WORK/data" --addr "$ADDR" --device-addr "$DADDR" --pprof "$PPROF" --log-level error)
[ -n "$DSN" ] && export MOAT_DATABASE="$DSN"
"$WORK/moat" "${server_args[@]}" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
until grep -q 'keep it safe' "$WORK/server.out" 2>/dev/null; do
	kill -0 "$SERVER_PID" || { cat "$WORK/server.err" >&2; exit 1; }
	sleep 0.1
done
sleep 0.2
OP_TOKEN=$(grep -A1 'keep it safe' "$WORK/server.out" | tail -1 | tr -d ' ')
MOAT_SERVER=https://$ADDR
MOAT_DEVICE_SERVER=https://$DADDR
CA=$WORK/data/tls/ca.pem

# The platform and the tenant, as docs/operations.md sets them up.
echo "$OP_TOKEN" | moat login --server "$MOAT_SERVER" --ca-cert "$CA" --token - >/dev/null
moat platform init --out "$WORK/keys" --no-passphrase >/dev/null
moat tenant create --name Contoso >/dev/null
moat tenant select Contoso >/dev/null
moat platform ca-sign --keys "$WORK/keys" >/dev/null
moat key generate --out "$WORK/release.key" --no-passphrase >/dev/null
moat tenant signing-key add --name release --public-key "$WORK/release.key.pub" >/dev/null
moat platform targets-sign --tenant Contoso --keys "$WORK/keys" >/dev/null
moat image package examples/dw100/os --out "$WORK/os.img" >/dev/null
moat platform os-publish "$WORK/os.img" --feed Retail --keys "$WORK/keys" >/dev/null
moat product create --name DW100 >/dev/null
mkdir -p "$WORK/app2"
cp -r examples/dw100/app/. "$WORK/app2/"
sed -i 's/"version": "1.0.0"/"version": "2.0.0"/; s/"security_version": 1/"security_version": 2/' "$WORK/app2/app.json"
moat image package examples/dw100/app --out "$WORK/app1.img" >/dev/null
moat image package "$WORK/app2" --out "$WORK/app2.img" >/dev/null
moat image add "$WORK/app1.img" --key "$WORK/release.key" >/dev/null
moat image add "$WORK/app2.img" --key "$WORK/release.key" >/dev/null
moat deployment create --device-group DW100/Production --image apps/dw100-app/1.0.0 >/dev/null
SERVER_RSS_IDLE=$(rss_kib "$SERVER_PID")
SERVER_INUSE_IDLE=$(inuse_bytes)
SERVER_LIVE_IDLE=$(inuse_bytes live)

# The tenant's cloud (--cloud), trusting the tenant's device CA; its own SQLite database.
sim_cloud=()
if [ "$CLOUD" = 1 ]; then
	moat ca-certificate download --out "$WORK/devices.pem" >/dev/null
	CLOUD_ADDR=127.0.0.1:$(free_port)
	CLOUD_MQTT=127.0.0.1:$(free_port)
	env -u MOAT_DATABASE "$WORK/moat" cloud --data "$WORK/cloud" --addr "$CLOUD_ADDR" --mqtt-addr "$CLOUD_MQTT" \
		--device-ca "$WORK/devices.pem" --server "$MOAT_SERVER" --server-ca "$CA" --log-level error \
		>"$WORK/cloud.out" 2>"$WORK/cloud.err" &
	CLOUD_PID=$!
	until grep -q '^TLS CA: ' "$WORK/cloud.out" 2>/dev/null; do
		kill -0 "$CLOUD_PID" || { cat "$WORK/cloud.err" >&2; exit 1; }
		sleep 0.1
	done
	CLOUD_CA=$(sed -n 's/^TLS CA: \(.*\) (SHA-256 .*/\1/p' "$WORK/cloud.out")
	CLOUD_URL=$(sed -n 's/^MQTT for devices: //p' "$WORK/cloud.out")
	CLOUD_RSS_IDLE=$(rss_kib "$CLOUD_PID")
	sim_cloud=(--cloud "$CLOUD_URL" --cloud-ca "$CLOUD_CA" --telemetry-interval "$TELEMETRY_INTERVAL")
fi
# stored_total: the device messages the cloud stored so far, from its /metrics.
stored_total() {
	curl -sf --cacert "$CLOUD_CA" "https://$CLOUD_ADDR/metrics" | awk '/^moat_cloud_ingest_stored_total / {printf "%d\n", $2}' ||
		{ echo "cannot read https://$CLOUD_ADDR/metrics" >&2; exit 1; }
}

# The fleet. The platform operator is also Contoso's Administrator here (it created it).
MOAT_TOKEN=$OP_TOKEN MOAT_OPERATOR_TOKEN=$OP_TOKEN "$WORK/moat" sim --log-level "${MOAT_SIM_LOG_LEVEL:-warn}" --server "$MOAT_SERVER" --device-server "$MOAT_DEVICE_SERVER" \
	--ca-cert "$CA" --product DW100 --group Production --devices "$N" --ramp "$RAMP" --stats-file "$STATS" ${sim_cloud[@]+"${sim_cloud[@]}"} \
	>"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
start=$SECONDS
wait_for "$N devices waiting" "s['waiting'] == $N" "${MOAT_LOAD_TIMEOUT:-$((N / 20 + 300))}"
echo "all $N devices attested and waiting after $((SECONDS - start)) s (attestations $(stat "s['attestations']"), retries $(stat "s['retries']"), answered busy $(stat "s['unavailable']"), gave up $(stat "s['gave_up']"))"
sleep 5 # let the last connections settle before measuring memory
SERVER_RSS=$(rss_kib "$SERVER_PID")
SERVER_INUSE=$(inuse_bytes)
SERVER_LIVE=$(inuse_bytes live)
SIM_RSS=$(rss_kib "$SIM_PID")
if [ "$PROFILE" = 1 ]; then # what the waiting fleet holds: go tool pprof -sample_index=inuse_space -top FILE
	curl -sf -o "$WORK/heap-waiting.pb.gz" "http://$PPROF/debug/pprof/heap?gc=1" || true
	curl -sf -o "$WORK/goroutine-waiting.txt" "http://$PPROF/debug/pprof/goroutine?debug=1" || true
fi
echo "memory: server heap+stacks in use $((SERVER_INUSE / 1048576)) MiB, $(((SERVER_INUSE - SERVER_INUSE_IDLE) / N)) bytes per waiting device over idle (live objects and stacks $(((SERVER_LIVE - SERVER_LIVE_IDLE) / N))); server RSS $((SERVER_RSS / 1024)) MiB ($(((SERVER_RSS - SERVER_RSS_IDLE) * 1024 / N)) bytes per device over idle); simulator RSS $((SIM_RSS / 1024)) MiB ($((SIM_RSS * 1024 / N)) bytes per device)"
if [ "$CLOUD" = 1 ]; then
	# Telemetry stored by the cloud over 30 s, once every device holds its MQTT session.
	wait_for "$N devices connected to the cloud" "s.get('cloud', {}).get('connected', 0) == $N" "${MOAT_LOAD_TIMEOUT:-$((N / 20 + 300))}"
	sent0=$(stat "s['cloud']['telemetry_sent']")
	stored0=$(stored_total)
	t0=$(now)
	sleep 30
	stored1=$(stored_total)
	t1=$(now)
	sent1=$(stat "s['cloud']['telemetry_sent']")
	CLOUD_RSS=$(rss_kib "$CLOUD_PID")
	SIM_RSS=$(rss_kib "$SIM_PID")
	connected=$(stat "s['cloud']['connected']")
	python3 - "$N" "$TELEMETRY_INTERVAL" "$stored0" "$stored1" "$t0" "$t1" "$sent0" "$sent1" <<'PY'
import re, sys
n, iv, s0, s1, t0, t1, a0, a1 = sys.argv[1:]
secs = sum(float(v) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for v, u in re.findall(r"([\d.]+)(ms|h|m|s)", iv))
w = float(t1) - float(t0)
print(f"cloud telemetry: {int(s1) - int(s0)} messages stored in {w:.1f} s = {(int(s1) - int(s0)) / w:.1f}/s (moat_cloud_ingest_stored_total); "
      f"the fleet publishes {int(n) / secs:.1f}/s ({n} devices every {iv}); the broker acknowledged about {int(a1) - int(a0)} in the window (simulator's statistics)")
PY
	echo "cloud memory: $connected devices connected; cloud RSS $((CLOUD_RSS / 1024)) MiB ($(((CLOUD_RSS - CLOUD_RSS_IDLE) * 1024 / connected)) bytes per connected device over idle $((CLOUD_RSS_IDLE / 1024)) MiB; RSS only: moat cloud has no --pprof); simulator RSS $((SIM_RSS / 1024)) MiB ($((SIM_RSS * 1024 / N)) bytes per device)"
fi
export MOAT_SERVER MOAT_DEVICE_SERVER STATS WORK SERVER_PID SIM_PID PPROF N
after_waiting

# Update latency: from `moat deployment create` to the devices holding the verified assignment.
t0=$(now)
moat deployment create --device-group DW100/Production --image apps/dw100-app/2.0.0 >/dev/null
profile cpu-update
wait_for "$N devices holding apps/dw100-app/2.0.0" "s['targets'].get('apps/dw100-app/2.0.0', {}).get('devices', 0) == $N" $((N / 10 + 300))
wait_for "$N devices on app 2.0.0 and waiting" "s['apps'].get('2.0.0', 0) == $N and s['waiting'] == $N" $((N / 10 + 300))
wait_profile
SIGN_RATE=$(bench "$WORK/director.test" '^BenchmarkIssueParallel$' "$N" assignments/s)
python3 - "$STATS" "$t0" "$N" "$SIGN_RATE" <<'PY'
import json, sys
from datetime import datetime
s = json.load(open(sys.argv[1])); t0, n, rate = float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t = s["targets"]["apps/dw100-app/2.0.0"]
ts = lambda k: datetime.fromisoformat(t[k].replace("Z", "+00:00")).timestamp() - t0
ideal = n / rate
print(f"update latency for {t['devices']} devices: first {ts('first'):.2f} s, p50 {ts('p50'):.2f} s, p99 {ts('p99'):.2f} s, last {ts('last'):.2f} s")
print(f"  ideal: {n} / the director's signing rate {rate:.0f}/s = {ideal:.3f} s; p50 {ts('p50') / ideal:.1f}x, p99 {ts('p99') / ideal:.1f}x the ideal")
PY
after_update

[ "$STORM" = 1 ] || exit 0
# The reconnect storm: every certificate expires at once; all attest again.
before_busy=$(stat "s['unavailable']")
kill -USR1 "$SIM_PID"
profile cpu-storm
wait_for "the storm to begin" "s.get('storm') is not None" 30
wait_for "$N devices to hold a new certificate" "s['storm']['devices'] == $N" "${MOAT_LOAD_TIMEOUT:-$((N / 20 + 300))}"
wait_profile
if [ -n "$DSN" ]; then
	ATTEST_RATE=$(MOAT_TEST_POSTGRES_DSN=$DSN bench "$WORK/fleet.test" '^BenchmarkAttestParallel/postgres$' "$N" attestations/s)
else
	ATTEST_RATE=$(bench "$WORK/fleet.test" '^BenchmarkAttestParallel/sqlite$' "$N" attestations/s)
fi
python3 - "$STATS" "$N" "$ATTEST_RATE" "$before_busy" <<'PY'
import json, sys
from datetime import datetime
s = json.load(open(sys.argv[1])); n, rate, busy0 = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
m = s["storm"]
ts = lambda k: datetime.fromisoformat(m[k].replace("Z", "+00:00")).timestamp() - datetime.fromisoformat(m["at"].replace("Z", "+00:00")).timestamp()
ideal = n / rate
print(f"reconnect storm: {m['devices']} of {m['expired']} devices hold a new certificate: p50 {ts('p50'):.2f} s, p99 {ts('p99'):.2f} s, last {ts('last'):.2f} s; answered busy (503) {s['unavailable'] - busy0} times, gave up {s['gave_up']}")
print(f"  ideal: {n} / the attestation rate {rate:.0f}/s = {ideal:.2f} s; last {ts('last') / ideal:.1f}x the ideal")
PY
after_storm
