#!/usr/bin/env bash
# Footprint of the device build, moat-agent (cmd/moat-agent: the agent and its launcher,
# nothing of the server): binary sizes cross-compiled with CGO_ENABLED=0 for linux/amd64,
# linux/arm64 and linux/arm, then, on this machine, resident memory idle and while it
# installs a 10 MiB and a 100 MiB image, and CPU while idle (internal/agent TestFootprint).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "--- binary size (CGO_ENABLED=0, -trimpath -ldflags='-s -w')"
for arch in amd64 arm64 arm; do
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags='-s -w' -o "$out/moat-agent-$arch" ./cmd/moat-agent
	size=$(stat -c %s "$out/moat-agent-$arch")
	awk -v a="$arch" -v s="$size" 'BEGIN { printf "  linux/%-6s %6.1f MiB  (%d bytes)\n", a, s / 1048576, s }'
done
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out/moat" ./cmd/moat
printf '  full moat binary (linux/%s, for comparison): %d bytes\n' "$(go env GOARCH)" "$(stat -c %s "$out/moat")"

echo "--- memory and CPU (this machine, $(go env GOARCH))"
MOAT_FOOTPRINT=1 go test -count=1 -run '^TestFootprint$' -v ./internal/agent | grep '^moat-agent' || {
	echo "TestFootprint failed; run: MOAT_FOOTPRINT=1 go test -run TestFootprint -v ./internal/agent" >&2
	exit 1
}
