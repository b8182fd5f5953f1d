# Sluice — one module per folder (see go.work). Every target works on a
# fresh machine with only Go installed.
SHELL   := bash
GO      ?= go
BIN     := bin/sluice
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Every module of the workspace, as directories and as package patterns.
MODULES  = $(shell $(GO) list -m -f '{{.Dir}}')
PATTERNS = $(shell $(GO) list -m -f '{{.Path}}/...')
TEST_FLAGS ?= -count=1 -timeout 15m

.PHONY: help run build test test-race bench lint fmt tidy tidy-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

run: build ## run everything on embedded defaults (embedded JetStream, SQLite, CRM simulator, demo producer)
	./$(BIN) run $(if $(CONFIG),--config $(CONFIG))

build: ## build the single binary into bin/sluice
	$(GO) build -trimpath -ldflags "-X sluice.dev/cmd/sluice/internal/app.Version=$(VERSION)" -o $(BIN) ./cmd/sluice

test: ## run every module's tests (Postgres/MySQL tests skip unless SLUICE_TEST_*_DSN is set)
	$(GO) test $(TEST_FLAGS) $(PATTERNS)

test-race: ## the tests under the race detector
	$(GO) test -race $(TEST_FLAGS) $(PATTERNS)

bench: build ## throughput and latency figures (not a test): ceiling, end to end, ratio, p50/p99, RSS
	$(GO) run ./e2e/cmd/bench $(BENCH_FLAGS)

lint: ## gofmt and go vet over every module
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PATTERNS)

fmt: ## gofmt -w every module
	gofmt -w $(MODULES)

tidy: ## go mod tidy in every module
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy) || exit 1; done

tidy-check: ## fail when a go.mod/go.sum is stale
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy -diff >/dev/null) || { echo "stale go.mod/go.sum in $$m: run make tidy"; exit 1; }; done

clean: ## remove bin/ and the default data directory
	rm -rf bin data
