#!/usr/bin/env bash
# Builds bin/caddy with Hearth's modules: xcaddy first (the pinned Go tool,
# the way users add Hearth to their own Caddy), falling back to a plain
# `go build` of xcaddy/caddy when xcaddy cannot resolve the local module.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null; then
	echo "Go 1.25 or newer is needed to build Hearth: see https://go.dev/doc/install (Debian's golang package is too old)" >&2
	exit 1
fi
caddy_version=$(go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)
module=$(go list -m)
mkdir -p bin
proxy="$(go env GOPROXY | cut -d, -f1)"
if [ "${HEARTH_BUILD:-xcaddy}" = xcaddy ] &&
	GOPROXY="${proxy}|off" go tool xcaddy build "$caddy_version" \
		--output bin/caddy.new --with "$module=." >bin/xcaddy.log 2>&1; then
	mv bin/caddy.new bin/caddy
	echo "built bin/caddy with xcaddy (Caddy $caddy_version)"
else
	[ "${HEARTH_BUILD:-xcaddy}" = xcaddy ] && echo "xcaddy build failed (see bin/xcaddy.log); using go build" >&2
	go build -o bin/caddy ./xcaddy/caddy
	echo "built bin/caddy with go build (Caddy $caddy_version)"
fi
