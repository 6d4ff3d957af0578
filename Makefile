# rdsproxy: `make demo` runs the system on a local sandbox; `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     ?= bin/rdsproxy

.PHONY: build image release-check snapshot test test-short demo bench fuzz lint check-tools check-test-tools update-ca clean

## build: a static binary (CGO_ENABLED=0: runs on any Linux and in a distroless image), version stamped, in $(BIN).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) .

## image: the release image for this machine's architecture (needs docker buildx), staged as goreleaser stages it.
IMAGE ?= rdsproxy:$(VERSION)
image:
	GOOS=linux $(MAKE) build BIN=bin/image/linux/$$($(GO) env GOARCH)/rdsproxy
	docker buildx build --load -t $(IMAGE) -f Dockerfile bin/image

## release-check: validate .goreleaser.yaml with goreleaser (if installed); snapshot: build every archive locally.
release-check:
	goreleaser check
snapshot:
	goreleaser release --snapshot --clean

## test: every test, with the race detector, against real PostgreSQL, psql and moto.
test: check-test-tools lint
	@# go test shows skips only with -v: say whether the Terraform plans run, and with which provider
	@# (before the suite, so that go test's own summary stays the last lines).
	@$(GO) test -race -run '^TestPlannedVersionsDocumented$$' -v ./terraform | grep -E 'NOTICE|plans the AWS|FAIL'
	$(GO) test -race -timeout 45m ./...

## test-short: the quick subset (skips the 5,000-session soak).
test-short: check-test-tools
	$(GO) test -race -short -timeout 20m ./...

## demo: sandbox (PostgreSQL + RDS IAM emulator), server and client; Ctrl-C ends it.
demo: check-tools build
	$(GO) build -o bin/demo ./scripts/demo
	@bin/demo

## bench: proxy vs direct and vs a bare two-hop relay, measured in one run; the real
## session-manager-plugin vs connect --via ssm (raw, striped, compressed) through the paced SSM
## endpoint; then what caller identity costs a new connection through a 20 ms round trip.
bench: build
	$(GO) run ./scripts/bench
	$(GO) test ./e2e -run XXX -bench IdentityConnect -benchtime 20x

## fuzz: run every fuzz target for FUZZTIME each.
FUZZTIME ?= 30s
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

## lint: gofmt, go vet and staticcheck (the version pinned here, fetched through the Go module proxy; staticcheck.conf).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	@# the files gofmt would change, listed: none may be (dash's read needs a name, so no `! read`)
	test -z "$$(gofmt -l . | tee /dev/stderr)"
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

check-tools:
	@scripts/check-tools.sh
check-test-tools:
	@scripts/check-tools.sh --drivers

## update-ca: refresh the embedded RDS CA bundle from AWS (needs internet), then check it.
update-ca:
	curl -fsSL -o server/rds-global-bundle.pem.new https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
	mv server/rds-global-bundle.pem.new server/rds-global-bundle.pem
	$(GO) test ./server -run 'TestEmbeddedBundle|TestUpstreamTLS'

clean:
	rm -rf bin
