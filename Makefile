# A menu of the commands the README and CI use. `make test` is the whole
# suite; .ci/run calls exactly it.

GO ?= go

.PHONY: test vet unit full-size bench-smoke fuzz-smoke bench build

test: vet unit full-size bench-smoke fuzz-smoke

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# Tests that start nodes re-execute themselves in a private network
# namespace (internal/netnstest), so this needs root or `unshare -rn`.
unit:
	$(GO) test -race -count=1 -timeout 15m ./...

# Tests whose full size the race detector makes too slow run once more
# without it (the discovery test uses 20 real nodes here, 8 under -race).
full-size:
	$(GO) test -count=1 -timeout 5m -run 'TestFindTwentyNodes' ./mesh

# Every Benchmark once, at its smallest size, so none of them rots.
bench-smoke:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 10m ./...

# Every fuzz target briefly, seeded with real inputs.
fuzz-smoke:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  pkg=./$$(dirname $$f); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
	    echo "fuzz $$pkg $$t"; out=$$($(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime 5s $$pkg 2>&1) || { echo "$$out"; exit 1; }; \
	  done; \
	done

# The benchmark report: confab against the raw link and NATS, side by side.
bench:
	$(GO) run ./bench -size full -out docs/benchmarks.md

build:
	$(GO) build -o confab ./cmd/confab
