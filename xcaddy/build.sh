#!/usr/bin/env bash
# xcaddy/build.sh [--race]: builds bin/caddy (with --race: bin/caddy-race,
# with Go's race detector, for the integration tests) with Hearth's modules
# by `xcaddy build --with github.com/hearth-dev/hearth=.`, the way users add
# Hearth to their own Caddy (xcaddy is pinned as a Go tool in go.mod).
#
# If xcaddy fails it falls back to a plain `go build` of xcaddy/caddy and
# says so, unless HEARTH_REQUIRE_XCADDY=1 (as `make test` sets): then the
# build fails, so the build users run is the build that is tested.
# HEARTH_BUILD=go builds with `go build` directly.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null; then
	echo "Go 1.25 or newer is needed to build Hearth: see https://go.dev/doc/install (Debian's golang package is too old)" >&2
	exit 1
fi
out=bin/caddy race=
if [ "${1:-}" = --race ]; then
	out=bin/caddy-race race=1
fi
caddy_version=$(go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)
module=$(go list -m)
mkdir -p bin
proxy="$(go env GOPROXY | cut -d, -f1)"

xcaddy_build() {
	# every module into the cache, each checked against go.sum
	go mod download
	# xcaddy builds in a temporary module of its own, which checks every
	# module against the checksum database; the one this machine's proxy
	# serves has no entry for the rfc2136 DNS provider. So that one module
	# (and only it) skips the database, after checking here that the copy in
	# the module cache is the one go.sum pins.
	local dns=github.com/caddy-dns/rfc2136 version sum
	version=$(go list -m -f '{{.Version}}' "$dns")
	sum=$(GOPROXY=off go mod download -json "$dns@$version" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p')
	if [ -z "$sum" ] || ! grep -qxF "$dns $version $sum" go.sum; then
		echo "the module cache's $dns@$version (${sum:-no hash}) is not the one go.sum pins" >&2
		return 1
	fi
	XCADDY_RACE_DETECTOR="$race" GONOSUMDB="$dns" GOPROXY="${proxy}|off" \
		go tool xcaddy build "$caddy_version" --output "$out.new" --with "$module=."
}

if [ "${HEARTH_BUILD:-xcaddy}" = xcaddy ]; then
	if xcaddy_build >"$out.xcaddy.log" 2>&1; then
		mv "$out.new" "$out"
		echo "built $out with xcaddy (Caddy $caddy_version${race:+, race detector})"
		exit 0
	fi
	if [ "${HEARTH_REQUIRE_XCADDY:-}" = 1 ]; then
		echo "xcaddy build failed; its output:" >&2
		tail -n 20 "$out.xcaddy.log" >&2
		exit 1
	fi
	echo "xcaddy build failed (see $out.xcaddy.log); using go build" >&2
fi
go build ${race:+-race} -o "$out" ./xcaddy/caddy
echo "built $out with go build (Caddy $caddy_version${race:+, race detector})"
