# mtlsgate build. Everything here needs only Go; tests build what they need.
GO       ?= go
BUILD    ?= build
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
WASMENV  := GOOS=wasip1 GOARCH=wasm
WASMFLAGS:= -buildmode=c-shared -trimpath -ldflags="-s -w"
FUZZTIME ?= 30s
DURATION ?= 60s
STATE    ?= .state

.PHONY: all build wasm cli test lint bench bench-gateway clean run demo e2e-envoy fuzz fuzz-short soak soak-mem

all: build

build: wasm cli

# The filter Envoy loads. c-shared gives the module _initialize, which proxy-wasm
# hosts call before anything else; -s -w drops DWARF to keep the module small.
# The overlay swaps two standard-library files that would otherwise link WASI
# calls Envoy does not provide (see filter/wasmbuild).
wasm:
	@mkdir -p $(BUILD)
	$(GO) run ./filter/wasmbuild/overlay > $(BUILD)/overlay.json
	$(WASMENV) $(GO) build $(WASMFLAGS) -overlay $(BUILD)/overlay.json -o $(BUILD)/mtlsgate.wasm ./filter
	$(WASMENV) $(GO) build $(WASMFLAGS) -overlay $(BUILD)/overlay.json -o $(BUILD)/noop.wasm ./filter/examples/noop

# CGO_ENABLED=0: without it the net and os/user packages link libc when a C
# compiler is present, and the binary no longer starts in a distroless or
# scratch image. Nothing here needs cgo.
cli:
	@mkdir -p $(BUILD)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w -X main.version=$(VERSION)" -o $(BUILD)/mtlsgate ./cmd/mtlsgate

# The README's test command: builds both artifacts, checks style, runs every test
# (the tests compile the .wasm themselves too, so plain `go test ./...` works).
test: build lint
	MTLSGATE_WASM=$(CURDIR)/$(BUILD)/mtlsgate.wasm $(GO) test -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(WASMENV) $(GO) vet ./filter/...

# Every benchmark, BENCHCOUNT runs each (benchstat reports medians), into
# $(BUILD)/bench.txt. Filter-vs-native: benchstat -ignore pkg on the
# filter/policy and filter/filtertest lines (docs/PERFORMANCE.md).
BENCHCOUNT ?= 5
BENCHTIME  ?= 1s
BENCH      ?= .
bench: build
	@{ MTLSGATE_WASM=$(CURDIR)/$(BUILD)/mtlsgate.wasm $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem \
	  -count $(BENCHCOUNT) -benchtime $(BENCHTIME) -timeout 120m ./... 2>&1; echo $$? > $(BUILD)/bench.rc; } \
	  | tee $(BUILD)/bench.txt; exit $$(cat $(BUILD)/bench.rc)

# The gateway's filter/no-op throughput ratio: both gateways loaded in turn
# within each run, so the machine's drift lands on both (separate runs of
# BenchmarkGateway see drift of minutes as a difference between the filters).
GATEWAYRUNS     ?= 5
GATEWAYREQUESTS ?= 20000
bench-gateway: build
	GO=$(GO) bash scripts/bench-gateway.sh $(GATEWAYRUNS) $(GATEWAYREQUESTS) $(BUILD)/bench-gateway.txt

# Every Fuzz target for FUZZTIME each. New interesting inputs are minimized for
# at most FUZZMINTIME (the default minute reads as a stall); a failing input
# lands in the package's testdata/fuzz and then runs with every `make test`.
FUZZMINTIME ?= 5s
fuzz: wasm
	@GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZMINTIME=$(FUZZMINTIME) \
	  MTLSGATE_WASM=$(CURDIR)/$(BUILD)/mtlsgate.wasm bash scripts/fuzz.sh

# A few seconds of fuzzing per target (about 40 s in all with a warm build
# cache, a few minutes cold); cheap enough for CI. scripts/fuzz.sh reruns a
# target (up to three runs) that failed only by Go 1.26's fuzztime deadline race.
fuzz-short:
	$(MAKE) fuzz FUZZTIME=3s FUZZMINTIME=2s

clean:
	rm -rf $(BUILD) $(STATE)

# The README's main command: demo PKI, sidecar, upstream and the local gateway
# running build/mtlsgate.wasm; prints curl commands and runs until Ctrl-C.
# DEMOFLAGS passes demo flags, e.g. other ports when the defaults are taken:
# make run DEMOFLAGS="--admin-listen 127.0.0.1:19911" (mtlsgate demo -h lists them).
DEMOFLAGS ?=
run: build
	./$(BUILD)/mtlsgate demo --state $(STATE)/demo --wasm $(BUILD)/mtlsgate.wasm $(DEMOFLAGS)

# The same flow, non-interactive: runs every documented request on free
# ports and fails unless each answers as documented.
demo: build
	./$(BUILD)/mtlsgate demo --check --state $(STATE)/demo-check --wasm $(BUILD)/mtlsgate.wasm

# The demo flow against a real Envoy running envoy.yaml. No Envoy can be
# installed on our build machines, so without an `envoy` on PATH this says it
# skipped and exits 0; envoy.yaml is still validated by `go test ./deploy/...`.
e2e-envoy: build
	scripts/e2e-envoy.sh

# 1,000,000 requests from 10,000 client certificates through one VM; prints
# linear memory over time and fails if it grows after the first 200,000.
soak-mem: wasm
	MTLSGATE_SOAK_MEM=1 MTLSGATE_WASM=$(CURDIR)/$(BUILD)/mtlsgate.wasm \
	  $(GO) test -count=1 -v -timeout 120m -run '^TestMemorySoak$$' ./filter/filtertest/

# The dev gateway with the real filter and a real sidecar for DURATION under
# mixed traffic (valid, untrusted, expired, no certificate, RFC 9440 header,
# forged identity headers) while CAs are added, rotated and removed and the
# sidecar restarts; every response is checked against the trust at that
# moment. `make test` runs the same for 8 seconds.
soak: wasm
	MTLSGATE_SOAK_DURATION=$(DURATION) MTLSGATE_WASM=$(CURDIR)/$(BUILD)/mtlsgate.wasm \
	  $(GO) test -count=1 -v -timeout 0 -run '^TestSoak$$' ./soak/
