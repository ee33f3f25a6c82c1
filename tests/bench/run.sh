#!/usr/bin/env bash
# Hearth benchmark (`make bench`): requests/s and p99 latency of Hearth and
# its peers, on loopback, on this machine, in one run; writes
# tests/bench/results.md and tests/bench/results.png.
#
# Apps, each with its own peers:
#   hello           tests/apps/hello.py (WSGI)
#   django          tests/bench/djangoapp: Django's default middleware stack and
#                   one plain view returning HttpResponse("hello"), no database (WSGI)
#   asgi            tests/bench/asgi_hello.py: a pure ASGI 3 hello world (no framework)
# Peers of the WSGI apps (2 Python workers each):
#   hearth          bin/caddy with `wsgi <app> { workers 2 }`
#   caddy-gunicorn  the same bin/caddy as a plain reverse_proxy to gunicorn
#                   (sync workers) over a unix socket
#   gunicorn        gunicorn sync workers, direct (no proxy)
#   nginx-uwsgi     nginx (uwsgi_pass, uwsgi protocol) to uWSGI over a unix socket
#   caddy-respond   bin/caddy `respond` with the same body, no backend: the ceiling
#   hearth-base     (only when BENCH_BASE_CADDY names another build, e.g. of the
#                   commit before a change) Hearth as above, run by that binary:
#                   the A/B of a change, alternated with hearth in one run
# Peers of the ASGI app (2 Python workers each):
#   hearth          bin/caddy with `asgi <app> { workers 2 }`
#   caddy-uvicorn   the same bin/caddy as a plain reverse_proxy to uvicorn
#                   (Debian's, `--workers 2`) over a unix socket
#   uvicorn         uvicorn `--workers 2`, direct (no proxy)
#   uvicorn-nodelay the same through tests/bench/uvicorn_nodelay.py, which only
#                   makes asyncio set TCP_NODELAY on its connections: with
#                   --workers, uvicorn's own listener leaves Nagle on (~40 ms
#                   per keep-alive request; uvicorn issue #3149)
#   caddy-respond   the ceiling, as above
#
# Every measurement starts the peer's servers fresh on random loopback ports,
# checks the response body, warms up, runs wrk, and stops them by PID. The
# order of peers (and of apps) changes from round to round; the report takes
# the median over rounds.
#
# Knobs (environment):
#   BENCH_DURATION=10s  BENCH_WARMUP=3s  BENCH_ROUNDS=3
#   BENCH_THREADS=2  BENCH_CONNECTIONS=64  BENCH_WORKERS=2
#   BENCH_APPS="hello django asgi"
#   BENCH_WSGI_PEERS="hearth caddy-gunicorn gunicorn nginx-uwsgi caddy-respond"
#   BENCH_ASGI_PEERS="hearth caddy-uvicorn uvicorn uvicorn-nodelay caddy-respond"
#   BENCH_PEERS (unset: all; else run only the peers listed, in that order, for
#   every app they apply to)
#   BENCH_QUIET_WAIT=120 (s to wait, before each measurement, for the machine to
#   be under BENCH_QUIET_BUSY=10 % busy with other jobs; 0 disables the wait)
#   HEARTH_CADDY=bin/caddy  BENCH_RESULTS=results.md  BENCH_CHART=results.png
#   BENCH_BASE_CADDY (a build to compare against: the peer hearth-base joins every
#   app's peers; BENCH_PEERS="hearth hearth-base" BENCH_APPS="hello django" is the
#   A/B of a change)
# A quick run: BENCH_DURATION=2s BENCH_WARMUP=1s BENCH_ROUNDS=1 tests/bench/run.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
CADDY=${HEARTH_CADDY:-$ROOT/bin/caddy}
GUNICORN=/usr/bin/gunicorn
UWSGI=/usr/bin/uwsgi
NGINX=/usr/sbin/nginx
WRK=/usr/bin/wrk

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-3s}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
WORKERS=${BENCH_WORKERS:-2}
read -r -a APPS <<<"${BENCH_APPS:-hello django asgi}"
BASE_PEER=${BENCH_BASE_CADDY:+hearth-base}
read -r -a WSGI_PEERS <<<"${BENCH_WSGI_PEERS:-hearth $BASE_PEER caddy-gunicorn gunicorn nginx-uwsgi caddy-respond}"
read -r -a ASGI_PEERS <<<"${BENCH_ASGI_PEERS:-hearth $BASE_PEER caddy-uvicorn uvicorn uvicorn-nodelay caddy-respond}"
read -r -a ONLY_PEERS <<<"${BENCH_PEERS:-}"
OUT_MD=${BENCH_RESULTS:-$HERE/results.md}
OUT_PNG=${BENCH_CHART:-$HERE/results.png}
READY_TRIES=${BENCH_READY_TRIES:-150} # × 0.2 s
QUIET_WAIT=${BENCH_QUIET_WAIT:-120}   # s to wait for other jobs to finish before a measurement
QUIET_BUSY=${BENCH_QUIET_BUSY:-10}    # % of all CPUs busy (with no server up) that counts as quiet
STOP_TRIES=150                        # × 0.1 s, then SIGKILL

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for bin in "$PY" "$CADDY" "$GUNICORN" "$UWSGI" "$NGINX" "$WRK" /usr/bin/curl; do
	[ -x "$bin" ] || die "$bin is missing; \`make bench\` builds bin/caddy and installs the Debian packages (gunicorn uwsgi-core uwsgi-plugin-python3 nginx-light wrk python3-matplotlib python3-uvicorn)"
done
$PY -c 'import django, matplotlib, uvicorn' 2>/dev/null || die "$PY lacks Django, matplotlib or uvicorn; install python3-django python3-matplotlib python3-uvicorn"
[ -e /usr/lib/uwsgi/plugins/python3_plugin.so ] || die "uWSGI's python3 plugin is missing; install uwsgi-plugin-python3"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a whole number ≥ 1, got $ROUNDS"

# --- scratch -----------------------------------------------------------------
SCRATCH=$HERE/scratch
RUN=$SCRATCH/run-$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$RUN"
ln -sfn "$(basename "$RUN")" "$SCRATCH/latest"
# Keep the five newest run directories.
ls -1d "$SCRATCH"/run-* 2>/dev/null | sort | head -n -5 | while read -r old; do rm -rf -- "$old"; done
MEASUREMENTS=$RUN/measurements.tsv
printf 'round\tposition\tapp\tpeer\tdir\n' >"$MEASUREMENTS"
# Unix socket paths must stay under 108 bytes.
SOCKDIR=$RUN/s
mkdir -p "$SOCKDIR"
[ ${#SOCKDIR} -lt 90 ] || die "scratch path $SOCKDIR is too long for unix sockets; move the repository to a shorter path"
export XDG_CONFIG_HOME=$RUN/xdg/config XDG_DATA_HOME=$RUN/xdg/data
# Run a copy of the caddy binary, so that a rebuild of bin/caddy during the run
# cannot mix two builds in one set of results.
CADDY_BUILT=$(date -u -r "$CADDY" '+%Y-%m-%d %H:%M:%S UTC')
cp "$CADDY" "$RUN/caddy"
CADDY_ORIG=$CADDY CADDY=$RUN/caddy
if [ -n "${BENCH_BASE_CADDY:-}" ]; then # the base build, also named caddy (the CPU tables go by name)
	mkdir -p "$RUN/base"
	cp "$BENCH_BASE_CADDY" "$RUN/base/caddy"
	BASE_ORIG=$BENCH_BASE_CADDY BENCH_BASE_CADDY=$RUN/base/caddy
fi
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT + uncommitted changes"

# --- processes ---------------------------------------------------------------
# Every server runs in its own session and process group (setsid without a
# fork, so $! is its PID and its group id). STARTED holds the PIDs still to stop.
STARTED=()

start() { # logfile command…  → sets PID
	local logfile=$1
	shift
	setsid "$@" >"$logfile" 2>&1 </dev/null &
	PID=$!
	STARTED+=("$PID")
}

alive() { # pid: running and not a zombie
	local state
	[ -e "/proc/$1/stat" ] || return 1
	state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$state" ] && [ "$state" != Z ]
}

stop() { # pid [leftover-report-file]: SIGTERM, bounded wait, SIGKILL the group
	local pid=$1 report=${2:-/dev/null} i p tree
	tree=$($PY "$HERE/procs.py" tree "$pid" 2>/dev/null || true)
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < STOP_TRIES; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		echo "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) did not stop within $((STOP_TRIES / 10))s of SIGTERM; killed" >>"$report"
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	# Anything of its tree still running after the leader is gone is a leftover.
	sleep 0.2
	for p in $tree; do
		[ "$p" = "$pid" ] && continue
		if alive "$p"; then
			echo "pid $p ($(cat "/proc/$p/comm" 2>/dev/null)), child of $pid, still ran after $pid exited; killed" >>"$report"
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
	local rest=()
	for p in "${STARTED[@]}"; do [ "$p" = "$pid" ] || rest+=("$p"); done
	STARTED=("${rest[@]+"${rest[@]}"}")
}

cleanup() {
	local i
	for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
		stop "${STARTED[i]}" "$RUN/leftovers-at-exit.txt"
	done
	rm -f "$RUN/caddy" # the copy of bin/caddy (50 MB)
}
trap cleanup EXIT
trap 'log "interrupted; stopping servers"; exit 130' INT
trap 'log "terminated; stopping servers"; exit 143' TERM

freeport() { $PY "$HERE/procs.py" freeport; }

show_logs() { # dir
	local f
	for f in "$1"/*.log; do
		[ -e "$f" ] || continue
		echo "--- $f (last 30 lines)" >&2
		tail -n 30 "$f" >&2
	done
}

wait_ready() { # url expected-body dir pid…
	local url=$1 expected=$2 dir=$3 body='' p i
	shift 3
	for ((i = 0; i < READY_TRIES; i++)); do
		for p in "$@"; do
			if ! alive "$p"; then
				log "a server (pid $p) exited while starting"
				show_logs "$dir"
				return 1
			fi
		done
		if body=$(curl -s --max-time 2 "$url" 2>/dev/null) && [[ $body == *"$expected"* ]]; then
			return 0
		fi
		sleep 0.2
	done
	log "$url did not answer \"$expected\" after $READY_TRIES tries; last body: ${body:0:200}"
	show_logs "$dir"
	return 1
}

# --- apps --------------------------------------------------------------------
app_setup() { # app → APP_KIND (wsgi|asgi) APP_DIR APP_MODULE APP_BODY
	case $1 in
	hello) APP_KIND=wsgi APP_DIR=$ROOT/tests/apps APP_MODULE=hello:application APP_BODY='Hello, world!' ;;
	django) APP_KIND=wsgi APP_DIR=$HERE/djangoapp APP_MODULE=benchsite.wsgi:application APP_BODY='hello' ;;
	asgi) APP_KIND=asgi APP_DIR=$HERE APP_MODULE=asgi_hello:app APP_BODY='Hello, world!' ;;
	*) die "unknown app $1 (known: hello django asgi)" ;;
	esac
}

app_peers() { # app → APP_PEERS: the app's peer list, filtered by BENCH_PEERS
	local all p q
	app_setup "$1"
	if [ "$APP_KIND" = asgi ]; then all=("${ASGI_PEERS[@]}"); else all=("${WSGI_PEERS[@]}"); fi
	APP_PEERS=()
	if ((${#ONLY_PEERS[@]} == 0)); then
		APP_PEERS=("${all[@]}")
		return 0
	fi
	for q in "${ONLY_PEERS[@]}"; do
		for p in "${all[@]}"; do
			if [ "$p" = "$q" ]; then APP_PEERS+=("$p"); fi
		done
	done
}

# --- peers -------------------------------------------------------------------
caddy_config() { # file admin-port port site-body
	cat >"$1" <<EOF
{
	admin 127.0.0.1:$2
	auto_https off
	persist_config off
}

:$3 {
	bind 127.0.0.1
$4
}
EOF
}

start_caddy() { # dir site-body [binary] → PID PORT
	local dir=$1
	PORT=$(freeport)
	caddy_config "$dir/Caddyfile" "$(freeport)" "$PORT" "$2"
	start "$dir/caddy.log" "${3:-$CADDY}" run --config "$dir/Caddyfile" --adapter caddyfile
}

start_gunicorn() { # dir bind → PID
	start "$1/gunicorn.log" "$GUNICORN" --workers "$WORKERS" --worker-class sync \
		--bind "$2" --chdir "$APP_DIR" "$APP_MODULE"
}

nginx_config() { # dir port socket
	mkdir -p "$1/tmp"
	cat >"$1/nginx.conf" <<EOF
# Generated by tests/bench/run.sh; nothing from /etc/nginx is used.
daemon off;
master_process on;
worker_processes auto;
pid $1/nginx.pid;
error_log $1/error.log warn;

events {
	worker_connections 4096;
}

http {
	access_log off;
	keepalive_requests 100000;
	client_body_temp_path $1/tmp/body;
	proxy_temp_path $1/tmp/proxy;
	fastcgi_temp_path $1/tmp/fastcgi;
	uwsgi_temp_path $1/tmp/uwsgi;
	scgi_temp_path $1/tmp/scgi;

	server {
		listen 127.0.0.1:$2;
		location / {
			uwsgi_pass unix:$3;
			# Debian's uwsgi_params, inline.
			uwsgi_param QUERY_STRING \$query_string;
			uwsgi_param REQUEST_METHOD \$request_method;
			uwsgi_param CONTENT_TYPE \$content_type;
			uwsgi_param CONTENT_LENGTH \$content_length;
			uwsgi_param REQUEST_URI \$request_uri;
			uwsgi_param PATH_INFO \$document_uri;
			uwsgi_param DOCUMENT_ROOT \$document_root;
			uwsgi_param SERVER_PROTOCOL \$server_protocol;
			uwsgi_param REQUEST_SCHEME \$scheme;
			uwsgi_param HTTPS \$https if_not_empty;
			uwsgi_param REMOTE_ADDR \$remote_addr;
			uwsgi_param REMOTE_PORT \$remote_port;
			uwsgi_param SERVER_PORT \$server_port;
			uwsgi_param SERVER_NAME \$server_name;
		}
	}
}
EOF
}

start_uvicorn() { # dir plain|nodelay bind-options… → PID
	local dir=$1 how=(-m uvicorn)
	[ "$2" = nodelay ] && how=("$HERE/uvicorn_nodelay.py")
	shift 2
	start "$dir/uvicorn.log" "$PY" "${how[@]}" "$APP_MODULE" --app-dir "$APP_DIR" \
		--workers "$WORKERS" --no-access-log "$@"
}

# start_peer app peer dir → URL, PEER_PIDS (start order)
start_peer() {
	local peer=$2 dir=$3 sock
	PEER_PIDS=()
	case $APP_KIND:$peer in
	wsgi:caddy-gunicorn | wsgi:gunicorn | wsgi:nginx-uwsgi | asgi:caddy-uvicorn | asgi:uvicorn | asgi:uvicorn-nodelay | *:hearth | *:hearth-base | *:caddy-respond) ;;
	*) die "peer $peer does not serve $APP_KIND apps like $1" ;;
	esac
	case $peer in
	hearth | hearth-base)
		local binary=$CADDY
		if [ "$peer" = hearth-base ]; then
			binary=${BENCH_BASE_CADDY:?hearth-base runs the build BENCH_BASE_CADDY names}
		fi
		start_caddy "$dir" "	$APP_KIND $APP_MODULE {
		dir $APP_DIR
		python $PY
		workers $WORKERS
	}" "$binary"
		PEER_PIDS+=("$PID")
		;;
	caddy-respond)
		start_caddy "$dir" "	respond \"$APP_BODY\" 200"
		PEER_PIDS+=("$PID")
		;;
	caddy-gunicorn)
		sock=$(mktemp -u "$SOCKDIR/g.XXXX").sock
		start_gunicorn "$dir" "unix:$sock"
		PEER_PIDS+=("$PID")
		start_caddy "$dir" "	reverse_proxy unix/$sock"
		PEER_PIDS+=("$PID")
		;;
	gunicorn)
		PORT=$(freeport)
		start_gunicorn "$dir" "127.0.0.1:$PORT"
		PEER_PIDS+=("$PID")
		;;
	nginx-uwsgi)
		sock=$(mktemp -u "$SOCKDIR/u.XXXX").sock
		start "$dir/uwsgi.log" "$UWSGI" --plugin python3 --master --processes "$WORKERS" \
			--socket "$sock" --chmod-socket=666 --vacuum --chdir "$APP_DIR" --module "$APP_MODULE" \
			--need-app --die-on-term --disable-logging
		PEER_PIDS+=("$PID")
		PORT=$(freeport)
		nginx_config "$dir" "$PORT" "$sock"
		start "$dir/nginx.log" "$NGINX" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log"
		PEER_PIDS+=("$PID")
		;;
	caddy-uvicorn)
		sock=$(mktemp -u "$SOCKDIR/v.XXXX").sock
		start_uvicorn "$dir" plain --uds "$sock"
		PEER_PIDS+=("$PID")
		start_caddy "$dir" "	reverse_proxy unix/$sock"
		PEER_PIDS+=("$PID")
		;;
	uvicorn)
		PORT=$(freeport)
		start_uvicorn "$dir" plain --host 127.0.0.1 --port "$PORT"
		PEER_PIDS+=("$PID")
		;;
	uvicorn-nodelay)
		PORT=$(freeport)
		start_uvicorn "$dir" nodelay --host 127.0.0.1 --port "$PORT"
		PEER_PIDS+=("$PID")
		;;
	*) die "unknown peer $peer (known: hearth hearth-base caddy-gunicorn gunicorn nginx-uwsgi caddy-uvicorn uvicorn uvicorn-nodelay caddy-respond)" ;;
	esac
	URL=http://127.0.0.1:$PORT/
}

stop_peer() { # dir: front first, then backends
	local i
	for ((i = ${#PEER_PIDS[@]} - 1; i >= 0; i--)); do
		stop "${PEER_PIDS[i]}" "$1/leftovers.txt"
	done
}

wait_quiet() { # before a measurement, while none of our servers runs
	local waited=0 busy
	((QUIET_WAIT > 0)) || return 0
	while busy=$($PY "$HERE/procs.py" busy 1.0) && ((busy > QUIET_BUSY)); do
		if ((waited >= QUIET_WAIT)); then
			log "the machine is still ${busy}% busy with other jobs after ${QUIET_WAIT}s; measuring anyway (the report flags disturbed rounds)"
			return 0
		fi
		((waited == 0)) && log "the machine is ${busy}% busy with other jobs; waiting up to ${QUIET_WAIT}s for it to settle"
		sleep 2
		waited=$((waited + 3))
	done
}

measure() { # round position app peer
	local round=$1 position=$2 app=$3 peer=$4 dir rps p99
	dir=$RUN/r$round-$app-$peer
	mkdir -p "$dir"
	app_setup "$app"
	wait_quiet
	start_peer "$app" "$peer" "$dir"
	wait_ready "$URL" "$APP_BODY" "$dir" "${PEER_PIDS[@]}" || die "$peer did not become ready for $app"
	curl -s -i --max-time 5 "$URL" >"$dir/response.txt" || true
	# wrk-ends.txt: when each wrk run returned, to tell log lines caused by wrk
	# closing its connections with requests in flight from errors under load.
	"$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" --latency "$URL" >"$dir/warmup.txt" 2>&1
	date +%s.%N >>"$dir/wrk-ends.txt"
	# CPU accounting: the servers' process trees and the machine from /proc
	# (procs.py snapshot), wrk's own from the shell's `times` of reaped children
	# (a builtin: no fork, so only wrk is reaped between the two).
	$PY "$HERE/procs.py" snapshot "${PEER_PIDS[@]}" >"$dir/cpu-before.json"
	times >"$dir/times-before.txt"
	"$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency --timeout 10s "$URL" >"$dir/wrk.txt" 2>&1
	times >"$dir/times-after.txt"
	date +%s.%N >>"$dir/wrk-ends.txt"
	$PY "$HERE/procs.py" snapshot "${PEER_PIDS[@]}" >"$dir/cpu-after.json"
	curl -s -i --max-time 5 "$URL" >"$dir/response-after.txt" || true
	stop_peer "$dir"
	printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$position" "$app" "$peer" "$dir" >>"$MEASUREMENTS"
	rps=$(awk '/^Requests\/sec/ {print $2}' "$dir/wrk.txt")
	p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk.txt")
	log "round $round  $(printf '%-7s %-15s' "$app" "$peer") ${rps:-?} req/s  p99 ${p99:-?}$(grep -h -E 'Non-2xx|Socket errors' "$dir/wrk.txt" | tr -s ' ' | sed 's/^/  /' | tr '\n' ' ')"
}

# --- rounds ------------------------------------------------------------------
{
	printf 'duration\t%s\nwarmup\t%s\nrounds\t%s\nthreads\t%s\nconnections\t%s\nworkers\t%s\n' \
		"$DURATION" "$WARMUP" "$ROUNDS" "$THREADS" "$CONNECTIONS" "$WORKERS"
	printf 'caddy\t%s\npython\t%s\ngunicorn\t%s\nuwsgi\t%s\nnginx\t%s\nwrk\t%s\n' \
		"$CADDY" "$PY" "$GUNICORN" "$UWSGI" "$NGINX" "$WRK"
	# uvicorn's --loop auto and --http auto pick uvloop and httptools when importable.
	printf 'uvicorn\t%s -m uvicorn\nuvicorn_impl\t%s\n' "$PY" \
		"$($PY -c 'import importlib.util as u; print("loop", "uvloop" if u.find_spec("uvloop") else "asyncio", "http", "httptools" if u.find_spec("httptools") else "h11")')"
	printf 'caddy_orig\t%s\ncaddy_built\t%s\ncaddy_sha256\t%s\ncaddy_version\t%s\ncommit\t%s\n' \
		"$CADDY_ORIG" "$CADDY_BUILT" "$(sha256sum "$CADDY" | cut -c1-16)" \
		"$("$CADDY" version 2>&1 | head -n 1 | cut -d' ' -f1)" "$COMMIT"
	if [ -n "${BENCH_BASE_CADDY:-}" ]; then
		printf 'base_orig\t%s\nbase_sha256\t%s\nbase_built\t%s\n' "$BASE_ORIG" \
			"$(sha256sum "$BENCH_BASE_CADDY" | cut -c1-16)" "$(date -u -r "$BASE_ORIG" '+%Y-%m-%d %H:%M:%S UTC')"
	fi
	printf 'started\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	printf 'loadavg_before\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RUN/settings.tsv"

log "run directory $RUN"
plan=()
for app in "${APPS[@]}"; do
	app_peers "$app"
	((${#APP_PEERS[@]} > 0)) || die "no peer of BENCH_PEERS=${ONLY_PEERS[*]} serves the $app app"
	plan+=("$app: ${APP_PEERS[*]}")
done
log "${#APPS[@]} apps × their peers × $ROUNDS rounds, wrk -t$THREADS -c$CONNECTIONS -d$DURATION after a ${WARMUP} warm-up"
for line in "${plan[@]}"; do log "  $line"; done
for ((r = 0; r < ROUNDS; r++)); do
	# Round r: even rounds run each app's peer list rotated by r, odd rounds the
	# list rotated by r+1 and reversed (the app order flips too). 5 peers, 3
	# rounds: ABCDE, BAEDC, CDEAB; 4 peers: ABCD, BADC, CDAB; 2 peers: AB, BA,
	# AB. So no peer always runs first, last or right after the same peer.
	rot=$((r % 2 == 1 ? r + 1 : r))
	apps=("${APPS[@]}")
	if ((r % 2 == 1)); then
		rev=()
		for ((i = ${#apps[@]} - 1; i >= 0; i--)); do rev+=("${apps[i]}"); done
		apps=("${rev[@]}")
	fi
	for app in "${apps[@]}"; do
		app_peers "$app"
		n=${#APP_PEERS[@]}
		order=()
		for ((i = 0; i < n; i++)); do order+=("${APP_PEERS[(i + rot) % n]}"); done
		if ((r % 2 == 1)); then
			rev=()
			for ((i = n - 1; i >= 0; i--)); do rev+=("${order[i]}"); done
			order=("${rev[@]}")
		fi
		pos=0
		for peer in "${order[@]}"; do
			pos=$((pos + 1))
			measure $((r + 1)) "$pos" "$app" "$peer"
		done
	done
done
printf 'finished\t%s\nloadavg_after\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/settings.tsv"

$PY "$HERE/report.py" "$RUN" "$OUT_MD" "$OUT_PNG"
log "wrote $OUT_MD and $OUT_PNG"
