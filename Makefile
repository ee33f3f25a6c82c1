# Hearth: `make run` serves the example Django app, `make test` runs every test.
export PATH := /usr/local/go/bin:$(PATH)
PYTHON        ?= /usr/bin/python3
RUN_PACKAGES  := python3 python3-django
TEST_PACKAGES := python3 python3-django python3-flask bind9 bind9-dnsutils git gunicorn nodejs chromium python3-fastapi pebble iproute2 util-linux redis-server python3-celery python3-redis
BENCH_PACKAGES := $(TEST_PACKAGES) uwsgi-core uwsgi-plugin-python3 nginx-light wrk nghttp2-client openssl python3-matplotlib python3-uvicorn
SOURCES := go.mod go.sum $(shell find . -path ./bin -prune -o \( -name '*.go' -o -name '*.py' -o -name '*.html' \) -print | grep -v _test.go | grep -v '^./tests/' | grep -v '^./examples/')

.PHONY: build run test test-unit test-integration bench clean

build: bin/caddy

bin/caddy: $(SOURCES)
	xcaddy/build.sh

# the integration tests run the xcaddy build, with the race detector
bin/caddy-race: $(SOURCES)
	HEARTH_REQUIRE_XCADDY=1 xcaddy/build.sh --race

run: build
	@tests/ensure-packages.sh $(RUN_PACKAGES)
	@echo "Serving the example Django app on http://localhost:2929 (Ctrl-C stops it)"
	bin/caddy run --config examples/django/Caddyfile --adapter caddyfile

test: bin/caddy-race
	@tests/ensure-packages.sh $(TEST_PACKAGES)
	go vet ./...
	$(PYTHON) -m unittest discover -s tests/python -t tests/python
	HEARTH_CADDY=$(CURDIR)/bin/caddy-race HEARTH_PYTHON=$(PYTHON) go test -count=1 -timeout 25m -parallel 4 ./...
	tests/fuzz.sh FuzzReader ./modules/protocol 300000
	tests/fuzz.sh FuzzParseResponseHead ./modules/python/engine 20000
	tests/fuzz.sh FuzzRequestHead ./modules/python/engine 20000
	tests/fuzz.sh FuzzStreamPeerRead ./modules/python/engine 20000
	tests/fuzz.sh FuzzClientOf ./modules/python/engine 20000
	tests/fuzz.sh FuzzWritev ./modules/internal/rawio 5000
	tests/fuzz.sh FuzzParser ./tests/bench/loadgen 20000
	tests/fuzz.sh FuzzWSGIConfig ./modules/python 8000
	tests/fuzz.sh FuzzASGIConfig ./modules/python 8000
	tests/fuzz.sh FuzzProcessConfig ./modules/process 8000
	tests/fuzz.sh FuzzGuardConfig ./modules/guard 8000
	tests/fuzz.sh FuzzGuardCheck ./modules/guard 30000
	tests/fuzz.sh FuzzHearthConfig ./modules/hearth 8000
	tests/fuzz.sh FuzzDDNSConfig ./modules/ddns 8000
	tests/fuzz.sh FuzzFilter ./modules/internal/termsafe 100000
	tests/fuzz.sh FuzzKeepCopy ./modules/job 5000

bench: build
	@tests/ensure-packages.sh $(BENCH_PACKAGES)
	tests/bench/run.sh

clean:
	rm -rf bin
