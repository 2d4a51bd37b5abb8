#!/usr/bin/env bash
# Issue 15's load benchmark with `moat sim`: update latency for N connected devices.
#
#   scripts/load.sh [--devices N] [--ramp R/s] [--postgres DSN] [--keep]
#
# It builds moat, starts a `moat server` (SQLite in a temporary directory, or PostgreSQL with
# --postgres DSN: give a fresh database), sets up the platform and tenant Contoso with
# product DW100 and app 1.0.0 deployed to DW100/Production through the CLI, runs `moat sim`
# with N devices (default 10000) and waits until all of them wait in the update long-poll.
# Then it deploys app 2.0.0 and times, from `moat deployment create`, how long until the
# devices hold the new verified assignment (p50, p99 and the last, from the simulator's
# statistics), and prints the server's and the simulator's memory (RSS) per waiting device.
#
# Hooks for the comparisons measured in the same run (issue 15, item 5):
#   after_waiting    runs once every device waits: measure the director's signing rate here
#   after_update     runs once every device holds the new assignment: the reconnect storm
# Define them in a file and pass it as MOAT_LOAD_HOOKS=FILE; each gets the environment below
# (MOAT_SERVER, MOAT_DEVICE_SERVER, MOAT_CONFIG_DIR, STATS, WORK, SERVER_PID, SIM_PID, N).
# MOAT_LOAD_TIMEOUT (seconds) bounds the wait for every device to wait (default N/20 + 300);
# MOAT_SIM_LOG_LEVEL sets the simulator's log level (its log is WORK/sim.err; --keep keeps WORK).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=10000
RAMP=500/s
DSN=""
KEEP=0
while [ $# -gt 0 ]; do
	case "$1" in
	--devices) N=$2; shift 2 ;;
	--ramp) RAMP=$2; shift 2 ;;
	--postgres) DSN=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	*) echo "usage: $0 [--devices N] [--ramp R/s] [--postgres DSN] [--keep]" >&2; exit 2 ;;
	esac
done

after_waiting() { :; }
after_update() { :; }
if [ -n "${MOAT_LOAD_HOOKS:-}" ]; then
	# shellcheck source=/dev/null
	. "$MOAT_LOAD_HOOKS"
fi

WORK=$(mktemp -d)
SERVER_PID=""
SIM_PID=""
cleanup() {
	[ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

go build -o "$WORK/moat" ./cmd/moat
moat() { "$WORK/moat" "$@"; }
export MOAT_CONFIG_DIR="$WORK/config"
STATS="$WORK/stats.json"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
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

echo "--- moat load: $N devices, ramp $RAMP, database ${DSN:+PostgreSQL}${DSN:-SQLite}; $(nproc) CPUs"
ADDR=127.0.0.1:$(free_port)
DADDR=127.0.0.1:$(free_port)
server_args=(server --data "$WORK/data" --addr "$ADDR" --device-addr "$DADDR" --log-level error)
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

# The fleet. The platform operator is also Contoso's Administrator here (it created it).
MOAT_TOKEN=$OP_TOKEN MOAT_OPERATOR_TOKEN=$OP_TOKEN "$WORK/moat" sim --log-level "${MOAT_SIM_LOG_LEVEL:-warn}" --server "$MOAT_SERVER" --device-server "$MOAT_DEVICE_SERVER" \
	--ca-cert "$CA" --product DW100 --group Production --devices "$N" --ramp "$RAMP" --stats-file "$STATS" \
	>"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
start=$SECONDS
wait_for "$N devices waiting" "s['waiting'] == $N" "${MOAT_LOAD_TIMEOUT:-$((N / 20 + 300))}"
echo "all $N devices attested and waiting after $((SECONDS - start)) s (attestations $(stat "s['attestations']"), retries $(stat "s['retries']"), answered busy $(stat "s['unavailable']"), gave up $(stat "s['gave_up']"))"
sleep 5 # let the last connections settle before measuring memory
SERVER_RSS=$(rss_kib "$SERVER_PID")
SIM_RSS=$(rss_kib "$SIM_PID")
echo "memory: server RSS $((SERVER_RSS / 1024)) MiB ($(((SERVER_RSS - SERVER_RSS_IDLE) * 1024 / N)) bytes per waiting device over idle), simulator RSS $((SIM_RSS / 1024)) MiB ($((SIM_RSS * 1024 / N)) bytes per device)"
export MOAT_SERVER MOAT_DEVICE_SERVER STATS WORK SERVER_PID SIM_PID N
after_waiting

# Update latency: from `moat deployment create` to the devices holding the verified assignment.
t0=$(python3 -c 'import time; print(time.time())')
moat deployment create --device-group DW100/Production --image apps/dw100-app/2.0.0 >/dev/null
wait_for "$N devices holding apps/dw100-app/2.0.0" "s['targets'].get('apps/dw100-app/2.0.0', {}).get('devices', 0) == $N" $((N / 10 + 300))
python3 - "$STATS" "$t0" <<'PY'
import json, sys
from datetime import datetime
s = json.load(open(sys.argv[1])); t0 = float(sys.argv[2])
t = s["targets"]["apps/dw100-app/2.0.0"]
ts = lambda k: datetime.fromisoformat(t[k].replace("Z", "+00:00")).timestamp() - t0
print(f"update latency for {t['devices']} devices: first {ts('first'):.2f} s, p50 {ts('p50'):.2f} s, p99 {ts('p99'):.2f} s, last {ts('last'):.2f} s")
PY
after_update
