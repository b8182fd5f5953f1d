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

.PHONY: help run build test test-race stress chaos bench bench-quick bench-backlog bench-backlog-5m lint layers staticcheck fmt tidy tidy-check clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

run: build ## run everything on embedded defaults (embedded JetStream, SQLite, CRM simulator, demo producer)
	./$(BIN) run $(if $(CONFIG),--config $(CONFIG))

run-realcrm: build ## make run against the simulator's "real CRM" profile (deploy/realcrm/sluice.yaml: no idempotency, lost answers, OAuth2, quota)
	./$(BIN) run --config deploy/realcrm/sluice.yaml

build: ## build the single binary into bin/sluice
	$(GO) build -trimpath -ldflags "-X sluice.dev/mesh/version.Commit=$(VERSION)" -o $(BIN) ./cmd/sluice

# go test -json through e2e/cmd/testreport: one line per package as it
# finishes, failing tests' output, "still running" every 30 s, then every
# skipped test with its reason and a "DONE n tests, s skipped, f failures" line.
TEST_REPORT = $(GO) run ./e2e/cmd/testreport

test: ## run every module's tests (Postgres/MySQL tests skip unless SLUICE_TEST_*_DSN is set); lists skipped tests and why at the end
	@set -o pipefail; $(GO) test -json $(TEST_FLAGS) $(PATTERNS) | $(TEST_REPORT)

test-race: ## the tests under the race detector
	@set -o pipefail; $(GO) test -json -race $(TEST_FLAGS) $(PATTERNS) | $(TEST_REPORT)

stress: ## lane (-count=6), e2e audit/replica/cluster tests (-count=3), 2 concurrent copies each (~5-6 min; not in CI): hunts flaky tests
	GO=$(GO) .ci/stress

chaos: ## chaos suite (root, ip netns, PostgreSQL): 3 NATS processes in network namespaces, every service kill -9'ed, partition, outages; 100,000 events (~9 min; not in CI; CHAOS_EVENTS=20000 for a quick run)
	GO=$(GO) .ci/chaos

bench: build ## throughput/latency matrix (not a test): 1/16/64 partitions, 2 dispatchers, ledger on/off (~6 min)
	$(GO) run ./e2e/cmd/bench $(BENCH_FLAGS)

bench-quick: build ## smoke run of the benchmark: 16 partitions, two hops and inline, fewer events (~5 min)
	$(GO) run ./e2e/cmd/bench -matrix=16,16+ledger+inline -events=20000 -warmup=2000 -latency-for=5s -flaky-events=20000 $(BENCH_FLAGS)

bench-backlog: build ## 336,000-event backlog (60 s CRM outage at 20M/hour): build, RSS, drain time
	$(GO) run ./e2e/cmd/bench -backlog=336000 $(BENCH_FLAGS)

bench-backlog-5m: build ## 5,000,000-event backlog on disk: RSS, disk, drain rate (~20 min, ~5 GB under $TMPDIR)
	@echo "5M-event backlog: ~7-8 min to build and ~8 min to drain on a quiet 2-core machine (progress every 10 s);"
	@echo "the data dir peaks at ~1 KB/event (~5 GB) under $${TMPDIR:-/tmp}; heap profile at the end of the build:"
	@echo "  $${TMPDIR:-/tmp}/sluice-backlog-5m.heap.pprof"
	$(GO) run ./e2e/cmd/bench -backlog=5000000 -heapprofile=$${TMPDIR:-/tmp}/sluice-backlog-5m.heap.pprof $(BENCH_FLAGS)

lint: layers ## gofmt, go vet and the layering rules over every module
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PATTERNS)

SERVICES = ingest enricher dispatcher inbound watchdog
layers: ## fail when a service module imports another service, or shipped code imports e2e
	@bad=0; for s in $(SERVICES); do \
	  for o in $(SERVICES); do [ $$s = $$o ] && continue; \
	    if $(GO) list -deps sluice.dev/$$s/... | grep -q "^sluice.dev/$$o\(/\|$$\)"; then echo "layers: $$s imports $$o (services stand on mesh, never on each other)"; bad=1; fi; \
	  done; done; \
	shipped=$$($(GO) list -m -f '{{.Path}}/...' | grep -v '^sluice.dev/e2e/'); \
	if $(GO) list -deps $$shipped | grep -q '^sluice.dev/e2e'; then echo "layers: shipped code imports e2e:"; \
	  for p in $$($(GO) list $$shipped); do $(GO) list -deps $$p | grep -q '^sluice.dev/e2e' && echo "  $$p"; done; bad=1; fi; \
	exit $$bad

# staticcheck, pinned; installed from the Go module proxy into a cache
# directory on first use (v0.8.2 = 2026.2.2 builds with Go 1.26).
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK_DIR     ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/sluice/staticcheck-$(STATICCHECK_VERSION)
staticcheck: ## staticcheck ./... over every module (installs the pinned version once)
	@test -x $(STATICCHECK_DIR)/staticcheck || GOWORK=off GOBIN=$(STATICCHECK_DIR) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@bad=0; for m in $(MODULES); do (cd $$m && $(STATICCHECK_DIR)/staticcheck ./...) || bad=1; done; exit $$bad

fmt: ## gofmt -w every module
	gofmt -w $(MODULES)

tidy: ## go mod tidy in every module
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy) || exit 1; done

tidy-check: ## fail when a go.mod/go.sum is stale
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy -diff >/dev/null) || { echo "stale go.mod/go.sum in $$m: run make tidy"; exit 1; }; done

clean: ## remove bin/ and the default data directory
	rm -rf bin data

# Docker Compose (compose.yaml): a 3-node NATS cluster, PostgreSQL and one
# container per service. Needs Docker with Compose 2.23.1+; not run in CI.
.PHONY: up down logs

up: ## build the image and start compose.yaml (NATS x3, PostgreSQL, every service, CRM simulator)
	VERSION=$(VERSION) docker compose up -d --build

down: ## stop compose.yaml's containers (docker compose down -v also drops the volumes)
	docker compose down

logs: ## follow the logs of compose.yaml's services
	docker compose logs -f --tail=100
