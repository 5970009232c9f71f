# ledgerd's front door. `make help` lists the targets.
#
# Everything a target needs is installed by the target itself on a fresh
# machine: PostgreSQL (Debian package, when root and missing), buf (npm,
# pinned in tools/buf), grpcurl, grpc-health-probe, golangci-lint and helm
# (Go, pinned in tools/go.mod), systemd-analyze (Debian package). Nothing
# is fetched from a remote plugin registry.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Where `make run` keeps its private PostgreSQL cluster, reused across runs.
DEV_PG_DIR  ?= $(CURDIR)/.data/pg
DEV_PG_PORT ?= 54329
# What `make run` serves on.
LEDGER_LISTEN_ADDR ?= 127.0.0.1:7070
export LEDGER_LISTEN_ADDR

GO_TEST_FLAGS ?= -race -count=1
# The Go modules besides the main one: the generated API and the Go client,
# which its users require without the server's dependencies (see
# clients/go/README.md). The main module's tests cover them against a live
# ledgerd (clients/gotest, clients/conformance); their own are unit tests.
GO_SUBMODULES := gen clients/go
BUF := tools/buf/node_modules/.bin/buf

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: run
run: ## Start ledgerd on 127.0.0.1:7070 over LEDGER_DATABASE_URL, or over a private PostgreSQL in .data/pg.
	@GO_LDFLAGS='$(LDFLAGS)' scripts/run.sh "$(DEV_PG_DIR)" "$(DEV_PG_PORT)"

.PHONY: ha
ha: ## Start a Patroni cluster (etcd, a primary, a synchronous standby) on 127.0.0.1, print its multi-host URL, stop it on ^C.
	go run ./internal/devcluster/cmd/hacluster

.PHONY: db-stop
db-stop: ## Stop the private PostgreSQL that `make run` started.
	@scripts/pg.sh stop "$(DEV_PG_DIR)"

# How long `make test` runs each fuzz target, and `make fuzz`.
# make test's fuzz runs are counted in executions, not seconds: a duration
# races Go 1.26's fuzz coordinator, which then fails a target with "context
# deadline exceeded" and no failing input (go.dev/issue/75804, fixed in Go
# 1.27) — most often on a loaded machine.
TEST_FUZZTIME ?= 500x
FUZZTIME ?= 1m

.PHONY: test
test: ## Run every test, the Python and TypeScript clients' included (and the clients' conformance suite in every language), the console's browser tests, the ledger and server suites again with coalescing off, and each fuzz target for TEST_FUZZTIME (500 runs), against a real PostgreSQL.
	@scripts/deps.sh python node browser
	@LEDGER_FUZZTIME=$(TEST_FUZZTIME) LEDGER_NO_COALESCE_ARGS="$(GO_TEST_FLAGS) ./ledger/ ./server/" \
		scripts/test.sh $(GO_TEST_FLAGS) ./...
	@for m in $(GO_SUBMODULES); do echo "test: module $$m" >&2; (cd $$m && go test $(GO_TEST_FLAGS) ./...) || exit 1; done

.PHONY: test-console
test-console: ## Run the console's browser tests alone: headless Chromium (installed first) against a live ledgerd, in development and in secure mode.
	@scripts/deps.sh browser
	@scripts/test.sh $(GO_TEST_FLAGS) -run 'TestConsole' ./cmd/ledgerd/

# make console-screenshots drives the console in headless Chromium over a
# seeded ledger and writes docs/images/console-*.png (a fixed window size),
# which docs/operations.md shows.
.PHONY: console-screenshots
console-screenshots: ## Regenerate the console's screenshots in docs/images/ from a seeded ledger.
	@scripts/deps.sh browser
	@LEDGER_CONSOLE_SCREENSHOTS="$(CURDIR)/docs/images" scripts/test.sh -count=1 -run '^TestConsoleScreenshots$$' ./cmd/ledgerd/

.PHONY: test-isolation
test-isolation: ## Run the isolation suite alone: the tests named TestIsolation..., one or more per line of docs/security.md's threat model.
	@scripts/test.sh $(GO_TEST_FLAGS) -run TestIsolation ./...

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (1m, or a count like 100000x) against a real PostgreSQL; failing inputs land in testdata/fuzz/.
	@scripts/test.sh --fuzz $(FUZZTIME)

# make bench runs ledgerbench briefly: every workload for BENCH_DURATION
# at BENCH_WORKERS workers, through ledgerd and as raw SQL, on a private
# PostgreSQL with fsync on (a few minutes on 2 cores). BENCH_FLAGS adds
# ledgerbench flags (`bin/ledgerbench --help`); docs/performance.md has
# the longer runs.
BENCH_DURATION ?= 10s
BENCH_WORKERS  ?= 32
BENCH_JSON     ?= .data/bench.json
BENCH_FLAGS    ?=
.PHONY: bench
bench: ## Run ledgerbench briefly (BENCH_DURATION per workload and side) and print the ledgerd / raw-SQL table with the transport floor; JSON in BENCH_JSON.
	go build -o bin/ledgerbench ./cmd/ledgerbench
	@mkdir -p "$(dir $(BENCH_JSON))"
	bin/ledgerbench --duration $(BENCH_DURATION) --workers $(BENCH_WORKERS) --json $(BENCH_JSON) $(BENCH_FLAGS)

# Extra flags for the chaos harness (`bin/ledgerchaos --help`), e.g.
# CHAOS_FLAGS='--scenarios pause,drain --cycles 2000'.
CHAOS_FLAGS ?=
.PHONY: chaos
chaos: ## Run the chaos harness: every scenario, >= 10,000 cycles and >= 20 faults each, on its own PostgreSQL and two ledgerd; figures into docs/reliability.md.
	go build -o bin/ledgerchaos ./cmd/ledgerchaos
	bin/ledgerchaos --out .data/chaos --doc docs/reliability.md $(CHAOS_FLAGS)

# How long each Go micro-benchmark runs (make bench-micro).
BENCH_TIME ?= 3s
.PHONY: bench-micro
bench-micro: ## Go micro-benchmarks: the store's hot paths on a cluster with fsync on, and the in-process validation and encoding.
	@LEDGER_PG_DURABLE=1 scripts/test.sh -run '^$$' -bench . -benchtime $(BENCH_TIME) -count 1 ./ledger/ ./server/

# What `make build` and `make image` stamp into the binaries (see
# internal/version): the version of the latest tag (`git describe`; in a
# clone without tags, the release in the VERSION file followed by -dev), the
# commit (-dirty with uncommitted changes) and the build time, or
# SOURCE_DATE_EPOCH's for a reproducible build. Each can be given instead:
# make build VERSION=v1.2.3. Computed once per make run.
VERSION    ?= $(shell git describe --tags --dirty 2>/dev/null || echo "$$(cat VERSION)-dev")
COMMIT     ?= $(shell c="$$(git rev-parse HEAD 2>/dev/null)" && { git diff --quiet HEAD -- 2>/dev/null && echo "$$c" || echo "$$c-dirty"; })
BUILD_DATE ?= $(shell date -u -d "@$${SOURCE_DATE_EPOCH:-$$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ)
VERSION    := $(VERSION)
COMMIT     := $(COMMIT)
BUILD_DATE := $(BUILD_DATE)
VERSION_PKG := github.com/ledgerd/ledgerd/internal/version
LDFLAGS := -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT) -X $(VERSION_PKG).buildDate=$(BUILD_DATE)
# Where `make build` writes the binaries.
BIN_DIR ?= bin

# make set-version V=x.y.z writes the release version into VERSION and every
# file that states it (internal/versions lists them: the Python and
# TypeScript packages, the clients' version constants, the Helm chart's
# appVersion), then renders the chart's golden files again. A test in `make
# test` fails when one of them differs from VERSION.
.PHONY: set-version
set-version: ## Set the one version of ledgerd and its three clients: make set-version V=0.2.0.
	@[ -n "$(V)" ] || { echo "usage: make set-version V=MAJOR.MINOR.PATCH" >&2; exit 2; }
	go run ./internal/versions/cmd/set-version '$(V)'
	$(MAKE) --no-print-directory helm-golden

.PHONY: build
build: ## Build bin/ledgerd and bin/ledgerctl, stamped with VERSION, COMMIT and BUILD_DATE (`ledgerd version`).
	go build -ldflags '$(LDFLAGS)' -o $(BIN_DIR)/ledgerd ./cmd/ledgerd
	go build -ldflags '$(LDFLAGS)' -o $(BIN_DIR)/ledgerctl ./cmd/ledgerctl

# make image builds the OCI image IMAGE with podman (installed by
# scripts/deps.sh): deploy/image/Containerfile over a context that holds only
# the static, stamped ledgerd and the build host's CA certificates. With
# SOURCE_DATE_EPOCH set, the image's timestamps are that time, so that the
# same commit gives the same image.
IMAGE ?= localhost/ledgerd:$(VERSION)
IMAGE_CONTEXT := .data/image
.PHONY: image
image: ## Build the container image IMAGE (localhost/ledgerd:VERSION) with podman: FROM scratch, the static ledgerd, CA certificates, user 65532.
	@scripts/deps.sh image
	@rm -rf $(IMAGE_CONTEXT) && mkdir -p $(IMAGE_CONTEXT)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(IMAGE_CONTEXT)/ledgerd ./cmd/ledgerd
	cp /etc/ssl/certs/ca-certificates.crt $(IMAGE_CONTEXT)/
	podman build --quiet --layers=false --file deploy/image/Containerfile --tag '$(IMAGE)' \
		--build-arg VERSION='$(VERSION)' --build-arg REVISION='$(COMMIT)' --build-arg CREATED='$(BUILD_DATE)' \
		$(if $(SOURCE_DATE_EPOCH),--timestamp $(SOURCE_DATE_EPOCH)) $(IMAGE_CONTEXT)
	@echo "image: $(IMAGE)"

.PHONY: image-test
image-test: ## Build the image under a throwaway name and test it, as root: its config, and its ledgerd run by chroot from the mounted image (version; serve over a throwaway PostgreSQL, answering a Reserve).
	@VERSION='$(VERSION)' COMMIT='$(COMMIT)' BUILD_DATE='$(BUILD_DATE)' scripts/image-test.sh

.PHONY: tools
tools: bin/grpcurl bin/grpc-health-probe ## Build grpcurl and grpc-health-probe into bin/ (pinned in tools/go.mod).

bin/grpcurl bin/grpc-health-probe: tools/go.mod tools/go.sum
	cd tools && go build -o ../bin/ github.com/fullstorydev/grpcurl/cmd/grpcurl github.com/grpc-ecosystem/grpc-health-probe

$(BUF): tools/buf/package.json tools/buf/package-lock.json
	npm ci --prefix tools/buf --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: generate
generate: $(BUF) ## Regenerate gen/, internal/gengateway/ and the Python and TypeScript clients' code from proto/.
	@scripts/deps.sh codegen node
	@# buf's clean empties gen/, which also holds its module's go.mod and
	@# go.sum: keep them aside and put them back.
	@keep="$$(mktemp -d)" && cp gen/go.mod gen/go.sum "$$keep"/ && \
		{ $(BUF) generate; status=$$?; cp "$$keep"/go.mod "$$keep"/go.sum gen/; rm -rf "$$keep"; exit $$status; }
	clients/python/tools/fix_generated.sh

.PHONY: check-generated
GENERATED := gen internal/gengateway clients/python/src/ledgerd/_gen clients/typescript/src/gen
check-generated: generate ## Fail if the committed generated code is stale.
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		git status --porcelain -- $(GENERATED); git --no-pager diff --stat -- $(GENERATED); \
		echo "generated code is stale: run 'make generate' and commit the result" >&2; exit 1; \
	fi

# golangci-lint (.golangci.yaml), built from the version pinned in
# tools/go.mod: rebuilt only when it is missing or tools/go.mod changes (a
# cold build takes a few minutes on 2 cores).
GOLANGCI_LINT := bin/golangci-lint
$(GOLANGCI_LINT): tools/go.mod tools/go.sum
	cd tools && go build -o ../$@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	@touch $@

# helm (deploy/helm/ledgerd), built from the version pinned in tools/go.mod
# like golangci-lint: rebuilt only when tools/go.mod changes (a cold build
# takes several minutes on 2 cores).
HELM := bin/helm
$(HELM): tools/go.mod tools/go.sum
	cd tools && go build -o ../$@ helm.sh/helm/v4/cmd/helm
	@touch $@

.PHONY: helm-check
helm-check: $(HELM) ## Lint the Helm chart, compare its renders with deploy/helm/ledgerd/testdata, check them and the systemd unit against ledgerd's flags.
	scripts/helm-check.sh $(HELM)
	cd tools && go test -count=1 ./deploycheck/

.PHONY: helm-golden
helm-golden: $(HELM) ## Rewrite the Helm chart's golden renders (deploy/helm/ledgerd/testdata) after a change to the chart.
	scripts/helm-check.sh $(HELM) --update

.PHONY: systemd-check
systemd-check: ## Verify deploy/systemd/ledgerd.service with systemd-analyze.
	@scripts/deps.sh systemd
	scripts/systemd-check.sh

# make lint runs every step, even after one has failed, then names the
# steps that failed. LINT_STEP NAME COMMAND... runs one step.
LINT_STEP = step() { local name="$$1"; shift; echo "--- lint: $$name"; "$$@" || failed+=("$$name"); }
.PHONY: lint
lint: $(BUF) $(GOLANGCI_LINT) ## gofmt; go vet and golangci-lint (.golangci.yaml; also in deploy/promcheck/); buf lint; buf format; go mod tidy (., gen/, clients/go/, tools/ and deploy/promcheck/); Markdown links.
	@failed=(); $(LINT_STEP); \
	gofmt_check() { local out; out="$$(gofmt -l $$(git ls-files -co --exclude-standard -- '*.go'))"; \
		[ -z "$$out" ] || { echo "gofmt needed (gofmt -w FILE):" >&2; echo "$$out" >&2; return 1; }; }; \
	tidy_check() { (cd "$$1" && go mod tidy -diff) || { echo "$$1/go.mod or go.sum not tidy: run 'go mod tidy' in $$1" >&2; return 1; }; }; \
	step "gofmt" gofmt_check; \
	step "go vet" go vet ./...; \
	step "golangci-lint" $(GOLANGCI_LINT) run ./...; \
	step "buf lint" $(BUF) lint; \
	step "buf format (fix: $(BUF) format -w proto)" $(BUF) format proto -d --exit-code; \
	step "go mod tidy" tidy_check .; \
	step "go mod tidy (tools/)" tidy_check tools; \
	for m in $(GO_SUBMODULES); do \
		step "go mod tidy ($$m/)" tidy_check $$m; \
		step "go vet ($$m/)" bash -c "cd $$m && go vet ./..."; \
		step "golangci-lint ($$m/)" bash -c "cd $$m && $(CURDIR)/$(GOLANGCI_LINT) run ./..."; \
	done; \
	step "go mod tidy (deploy/promcheck/)" tidy_check deploy/promcheck; \
	step "go vet (deploy/promcheck/)" bash -c 'cd deploy/promcheck && go vet ./...'; \
	step "golangci-lint (deploy/promcheck/)" bash -c 'cd deploy/promcheck && ../../$(GOLANGCI_LINT) run ./...'; \
	step "Markdown links" go run ./internal/linkcheck/cmd/linkcheck; \
	if [ $${#failed[@]} -gt 0 ]; then \
		echo "make lint: failed:" >&2; printf '  %s\n' "$${failed[@]}" >&2; exit 1; \
	fi; \
	echo "make lint: every step passed"

# The API must stay wire- and source-compatible with what main has; run on
# a branch before merging (on main itself it compares main with itself).
BREAKING_AGAINST ?= .git\#branch=main,subdir=proto
.PHONY: breaking
breaking: $(BUF) ## Check proto/ for breaking changes against main.
	$(BUF) breaking proto --against '$(BREAKING_AGAINST)'

.PHONY: ci
ci: lint check-generated helm-check systemd-check test ## What CI runs (.ci/run).
