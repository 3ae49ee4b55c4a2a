# wharf — the two commands that matter: `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PKGS    := ./...

.PHONY: build run test fuzz bench bench-e2e clean

build: ## build bin/wharf
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/wharf ./cmd/wharf

run: build ## start the zero-config mirror on :5000 with its cache in ./data
	./bin/wharf serve

test: ## vet, then every test with the race detector (includes short fuzz seeds)
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

fuzz: ## run every fuzz target for FUZZTIME each (default 20s)
	./scripts/fuzz.sh $(or $(FUZZTIME),20s)

bench: ## micro-benchmarks of the hot paths
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

bench-e2e: build ## end-to-end figures: bin/wharf as a process against in-process upstreams (bench/README.md)
	$(GO) test -tags bench -run . -v -count=1 -timeout 20m ./bench/

.PHONY: e2e
e2e: ## end-to-end suite: real dockerd, containerd, podman, skopeo and crane through bin/wharf (needs root; installs missing clients)
	./scripts/install-e2e-deps.sh
	$(MAKE) build
	./scripts/e2e-conformance-build.sh
	$(GO) test -tags e2e -count=1 -timeout 14m ./test/e2e/...

clean:
	rm -rf bin
