# feedmeter — make test runs everything CI runs.
GO ?= go
PKGS := ./...

.PHONY: all build test vet bench fuzz golden run clean

all: build

build:
	$(GO) build -o bin/feedmeter ./cmd/feedmeter

vet:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# The tests run beside a throwaway ClickHouse (scripts/clickhouse.sh run starts
# it on 127.0.0.1:19000 with its data in a temp dir and stops it after);
# tests that need it skip when clickhouse-server is not installed, and fail
# instead when CI=true.
test: vet
	bash scripts/clickhouse.sh run -- $(GO) test -count=1 -timeout 12m $(PKGS)

# Benchmarks of the parsers against gofeed; see BENCHMARKS.md.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s -cpu 1 ./ingest/

# A short fuzzing run of the parser differential (longer: FUZZTIME=10m).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseXML -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./ingest/
	$(GO) test -run '^$$' -fuzz FuzzParseJSON -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./ingest/

# Rewrite the golden files from the current parser (review the diff!).
golden:
	$(GO) test -count=1 -run TestParseGolden ./cmd/feedmeter/ -update

# The whole pipeline on embedded defaults, beside a throwaway ClickHouse
# (scripts/clickhouse.sh installs Debian's when missing and run as root;
# without one the demo stops after Kafka). DEMO_FLAGS=--keep leaves the API
# and the usage page up at the end; `./bin/feedmeter demo -h` lists the rest.
DEMO_FLAGS ?=
run: build
	bash scripts/clickhouse.sh run -- ./bin/feedmeter demo $(DEMO_FLAGS)

clean:
	rm -rf bin
