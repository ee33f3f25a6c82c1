#!/usr/bin/env bash
# tests/fuzz.sh <target> <package> <executions>: runs one Go fuzz target for
# a number of executions (-fuzztime Nx), not for a duration. A duration
# races Go's fuzzing coordinator (go.dev/issue/75804, fixed in Go 1.27): on
# a loaded machine a clean run can end in a bare "context deadline
# exceeded", which failed CI twice in a row on FuzzWSGIConfig. A count has
# no deadline to race; a slow machine only takes longer. Any failure fails.
set -uo pipefail
target=$1 pkg=$2 execs=$3
if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "${execs}x" -timeout 10m "$pkg" 2>&1); then
	printf '%s\n' "$out" | tail -n 3
else
	status=$?
	printf '%s\n' "$out"
	exit $status
fi
