#!/usr/bin/env bash
# The one test command (`make test`, `.ci/run`): format check, go.mod tidy check, go vet, golangci-lint,
# then every test with the race detector and shuffled order, against a real PostgreSQL.
#
#   scripts/test.sh                                  # everything: go test ./...
#   scripts/test.sh -run Postgres ./internal/store/... # arguments go to go test verbatim,
#                                                    # so name the packages too
#
# PostgreSQL: with MOAT_TEST_POSTGRES_DSN set, the tests use that server. Otherwise this
# script starts a throwaway cluster (fsync off, trust auth, 127.0.0.1 only) in a temporary
# directory and removes it on exit; it installs PostgreSQL with apt-get when running as root
# without it. Without PostgreSQL those tests skip, or fail when CI=true.
#
# Chromium: the web console's browser tests (internal/console) drive Debian's chromium
# headless. This script installs it with apt-get when running as root without it, and
# exports its path as MOAT_CHROMIUM. Without it those tests skip, or fail when CI=true.
#
# Mosquitto clients: the manufacturer cloud's broker tests (internal/cloud/...) connect with
# Debian's mosquitto_pub and mosquitto_sub, independent MQTT clients. This script installs
# mosquitto-clients with apt-get when running as root without them. Without them those
# tests skip, or fail when CI=true.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

checks() {
	echo "--- gofmt" >&2
	unformatted=$(gofmt -l .)
	if [[ -n $unformatted ]]; then
		echo "these files need gofmt -w:" >&2
		echo "$unformatted" >&2
		exit 1
	fi

	echo "--- go mod tidy -diff" >&2
	go mod tidy -diff

	echo "--- go vet" >&2
	go vet ./...

	echo "--- golangci-lint (pinned in tools/go.mod)" >&2
	go tool -modfile=tools/go.mod golangci-lint run ./...
}

# MOAT_TEST_NO_CHECKS=1 skips the format, tidy, vet and lint checks while iterating on tests;
# CI always runs them.
if [[ ${MOAT_TEST_NO_CHECKS:-} != 1 || ${CI:-} == true ]]; then
	checks
fi

pg_bin() {
	local dirs
	dirs=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V) || true
	[[ -n $dirs ]] && echo "$dirs" | tail -n1
	return 0
}

pg_dir=""
pg_as=()
pg_stop() {
	if [[ -n $pg_dir ]]; then
		if [[ -f $pg_dir/data/postmaster.pid ]]; then
			"${pg_as[@]}" "$pg_bindir/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
		fi
		rm -rf "$pg_dir"
	fi
}

pg_start() {
	pg_bindir=$(pg_bin)
	if [[ -z $pg_bindir && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		echo "--- installing PostgreSQL (apt-get)" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
		pg_bindir=$(pg_bin)
	fi
	if [[ -z $pg_bindir ]]; then
		echo "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin:" >&2
		echo "install the postgresql package, or set MOAT_TEST_POSTGRES_DSN." >&2
		if [[ ${CI:-} == true ]]; then
			exit 1
		fi
		echo "the PostgreSQL tests will skip." >&2
		return 0
	fi

	pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/moat-pg.XXXXXX")
	trap pg_stop EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	if [[ $(id -u) == 0 ]]; then
		# PostgreSQL refuses to run as root.
		chown postgres: "$pg_dir"
		pg_as=(runuser -u postgres --)
	fi
	"${pg_as[@]}" "$pg_bindir/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 ||
		{ cat "$pg_dir/initdb.log" >&2; exit 1; }
	cat >>"$pg_dir/data/postgresql.conf" <<-EOF
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$pg_dir'
		max_connections = 300
		fsync = off
		synchronous_commit = off
		full_page_writes = off
	EOF

	local port
	for port in $(seq 54329 54428); do
		# Skip ports that answer; a port taken between the check and the start fails the
		# start, and the loop moves on.
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			continue
		fi
		if "${pg_as[@]}" "$pg_bindir/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -o "-p $port" -w -t 60 start >/dev/null 2>&1; then
			export MOAT_TEST_POSTGRES_DSN="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
			echo "--- PostgreSQL $("$pg_bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
			return 0
		fi
	done
	echo "could not start PostgreSQL on any port in 54329-54428:" >&2
	tail -n 20 "$pg_dir/postgres.log" >&2 || true
	exit 1
}

if [[ -z ${MOAT_TEST_POSTGRES_DSN:-} ]]; then
	pg_start
fi

chromium_find() {
	local name
	for name in chromium chromium-browser google-chrome; do
		if command -v "$name" >/dev/null; then
			command -v "$name"
			return 0
		fi
	done
	return 0
}

if [[ -z ${MOAT_CHROMIUM:-} ]]; then
	MOAT_CHROMIUM=$(chromium_find)
	if [[ -z $MOAT_CHROMIUM && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		echo "--- installing Chromium (apt-get)" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
		MOAT_CHROMIUM=$(chromium_find)
	fi
	if [[ -z $MOAT_CHROMIUM ]]; then
		echo "chromium not found: install Debian's chromium package, or set MOAT_CHROMIUM." >&2
		if [[ ${CI:-} == true ]]; then
			exit 1
		fi
		echo "the browser tests will skip." >&2
	else
		export MOAT_CHROMIUM
		echo "--- $("$MOAT_CHROMIUM" --version 2>/dev/null || echo chromium) at $MOAT_CHROMIUM" >&2
	fi
fi

if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		echo "--- installing mosquitto-clients (apt-get)" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients >/dev/null
	fi
	if ! command -v mosquitto_pub >/dev/null; then
		echo "mosquitto_pub not found: install Debian's mosquitto-clients package." >&2
		if [[ ${CI:-} == true ]]; then
			exit 1
		fi
		echo "the MQTT client tests will skip." >&2
	fi
fi
echo "--- $({ mosquitto_pub --help 2>/dev/null || true; } | grep -m1 -i version || echo mosquitto_pub)" >&2

# S3: the blob store's tests and the replica tests start versitygw's POSIX gateway (a real
# S3 server, pinned in tools/go.mod). It is built here once per run into the user's cache
# (later runs reuse it; internal/testenv/s3.go names it the same way) so that test packages
# running in parallel do not each build it. Without it those tests skip, or fail when CI=true.
if [[ -z ${MOAT_TEST_VERSITYGW:-} ]]; then
	vgw_dir="${XDG_CACHE_HOME:-$HOME/.cache}/moat-test"
	vgw="$vgw_dir/versitygw-$(sha256sum tools/go.sum | cut -c1-12)"
	if [[ ! -x $vgw ]]; then
		echo "--- building versitygw (tools/go.mod) for the S3 tests" >&2
		mkdir -p "$vgw_dir"
		if go build -modfile=tools/go.mod -o "$vgw.tmp.$$" github.com/versity/versitygw/cmd/versitygw; then
			mv "$vgw.tmp.$$" "$vgw"
		else
			rm -f "$vgw.tmp.$$"
			echo "versitygw did not build." >&2
			if [[ ${CI:-} == true ]]; then
				exit 1
			fi
			echo "the S3 tests will build it themselves or skip." >&2
		fi
	fi
	if [[ -x $vgw ]]; then
		export MOAT_TEST_VERSITYGW="$vgw"
	fi
fi

args=("$@")
if [[ ${#args[@]} -eq 0 ]]; then
	args=(./...)
fi
echo "--- go test -race -shuffle=on ${args[*]}" >&2
status=0
go test -race -shuffle=on -timeout 40m "${args[@]}" || status=$?
if [[ $# -eq 0 ]]; then
	# The race detector slows the pure-Go SQLite some forty times, so the race run starts a
	# smaller fleet on it (internal/fleet/race_test.go); the whole thousand runs here.
	echo "--- go test -run TestAttest_1000Concurrent ./internal/fleet (no race detector: the whole fleet on SQLite)" >&2
	go test -count=1 -run '^TestAttest_1000Concurrent$' ./internal/fleet || status=$?
fi
exit "$status"
