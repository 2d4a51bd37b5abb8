# An index of one-liners; plain go commands are the interface (docs: STYLE.md, Tools).
# `make test` is what CI runs (.ci/run).

BIN      ?= bin/moat
FUZZTIME ?= 30s

.PHONY: test demo build fuzz bench lint

## test: gofmt check, go vet, then go test -race -shuffle=on ./... against a throwaway
## PostgreSQL (or MOAT_TEST_POSTGRES_DSN). Extra go test arguments, packages included:
##   make test ARGS='-run Store ./internal/store/...'
test:
	bash scripts/test.sh $(ARGS)

## demo: run the whole system on this machine with default settings.
demo:
	go run ./cmd/moat demo

## build: compile everything, and a static moat binary (pure Go: CGO_ENABLED=0 cross-compiles).
build:
	go build ./...
	CGO_ENABLED=0 go build -trimpath -o $(BIN) ./cmd/moat

## fuzz: run every fuzz target for FUZZTIME each. One target by hand:
##   go test -run='^$$' -fuzz='^FuzzDecodeBody$$' -fuzztime=30s ./internal/api/mgmt
fuzz:
	@set -e; for pkg in $$(go list ./...); do \
		for target in $$(go test -list '^Fuzz' "$$pkg" | grep '^Fuzz' || true); do \
			echo "--- $$pkg $$target"; \
			go test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) "$$pkg"; \
		done; \
	done

## bench: every benchmark, each with its in-run baseline.
bench:
	go test -run='^$$' -bench=. ./...

## lint: golangci-lint v2 with .golangci.yml, pinned in tools/go.mod.
lint:
	go tool -modfile=tools/go.mod golangci-lint run ./...
