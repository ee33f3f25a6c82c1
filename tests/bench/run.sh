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
#   static          a 2 KiB stylesheet five names deep (static/css/site.css, made
#                   for the run), served as a file: what a Django site's pages pull
# Peers of the WSGI apps (2 Python workers each):
#   hearth          bin/caddy with `wsgi <app> { workers 2 }`
#   caddy-gunicorn  the same bin/caddy as a plain reverse_proxy to gunicorn
#                   (sync workers) over a unix socket
#   gunicorn        gunicorn sync workers, direct (no proxy)
#   nginx-uwsgi     nginx (uwsgi_pass, uwsgi protocol) to uWSGI over a unix socket
#   hearth-2g       Hearth as above with GOMEMLIMIT=1843MiB, the limit Caddy sets
#                   on a 2 GiB board (90%): what the default `caddy_gc_floor auto`
#                   gives there (a 14 MiB floor instead of this machine's 64 MiB),
#                   for the memory rows
#   caddy-respond   bin/caddy `respond` with the same body, no backend: the ceiling
#   hearth-base     (only when BENCH_BASE_CADDY names another build, e.g. of the
#                   commit before a change) Hearth as above, run by that binary:
#                   the A/B of a change, alternated with hearth in one run
# Peers of the ASGI app (2 Python workers each):
#   hearth          bin/caddy with `asgi <app> { workers 2 }`
#   hearth-2g       the same with GOMEMLIMIT=1843MiB (see above)
#   caddy-uvicorn   the same bin/caddy as a plain reverse_proxy to uvicorn
#                   (Debian's, `--workers 2`) over a unix socket
#   uvicorn         uvicorn `--workers 2`, direct (no proxy)
#   uvicorn-nodelay the same through tests/bench/uvicorn_nodelay.py, which only
#                   makes asyncio set TCP_NODELAY on its connections: with
#                   --workers, uvicorn's own listener leaves Nagle on (~40 ms
#                   per keep-alive request; uvicorn issue #3149)
#   caddy-respond   the ceiling, as above
# Peers of the static file (no Python):
#   hearth          bin/caddy `file_server` in a site that also serves a Python app
#                   (hello under /app/, 2 workers, idle), as a Django site serves its
#                   static files: through Hearth's linkfs, with Caddy on the one CPU
#                   `caddy_cpus auto` gives it beside the app's workers
#   caddy-files     the same bin/caddy `file_server` with no Hearth in the config
#                   (Caddy's plain file system)
#   nginx-static    nginx serving the directory (`root`, defaults otherwise)
#   hearth-base     (with BENCH_BASE_CADDY) Hearth as above, run by that binary
#
# Three kinds of measurement, each alternating the peers over BENCH_ROUNDS rounds:
#   closed  wrk -c64 over plain HTTP: peak requests/s, p99 at saturation, CPU per
#           request, and the whole stack's peak RSS and PSS (procs.py memwatch)
#   tls     the same closed loop over HTTPS (TLS 1.3, one ECDSA P-256 certificate
#           made for the run): HTTP/1.1 with wrk, HTTP/2 with h2load (16
#           connections × 4 streams); Hearth against nginx terminating TLS in
#           front of uWSGI, and Caddy `respond` as the ceiling of any Caddy
#           front (BENCH_TLS_APPS, BENCH_TLS_PEERS)
#   open    a fixed request rate (tests/bench/loadgen, open loop: latency counts
#           from when each request was due, so a stalled server is not hidden
#           by a waiting client) at 25, 50, 75 and 90% of the best peer's median
#           peak in the closed runs: p50/p90/p99/p99.9/max, and the generator's
#           own CPU (BENCH_OPEN_APPS, BENCH_OPEN_PEERS, BENCH_OPEN_LOADS)
# Every measurement starts the peer's servers fresh on random loopback ports,
# checks the response body, warms up, runs the load, and stops them by PID. The
# order of peers (and of apps) changes from round to round; the report takes
# the median over rounds.
#
# Knobs (environment):
#   BENCH_DURATION=10s  BENCH_WARMUP=3s  BENCH_ROUNDS=3
#   BENCH_THREADS=2  BENCH_CONNECTIONS=64  BENCH_WORKERS=2
#   BENCH_APPS="hello django asgi static"
#   BENCH_WSGI_PEERS="hearth hearth-2g caddy-gunicorn gunicorn nginx-uwsgi caddy-respond"
#   BENCH_ASGI_PEERS="hearth hearth-2g caddy-uvicorn uvicorn uvicorn-nodelay caddy-respond"
#   BENCH_STATIC_PEERS="hearth caddy-files nginx-static"
#   BENCH_PEERS (unset: all; else run only the peers listed, in that order, for
#   every app they apply to, in every kind of measurement)
#   BENCH_TLS_APPS="hello"  BENCH_TLS_PEERS="hearth nginx-uwsgi caddy-respond" ("" skips TLS)
#   BENCH_OPEN_APPS="hello django"  BENCH_OPEN_PEERS="hearth nginx-uwsgi caddy-respond"
#   ("" skips; caddy-respond there is the tail of a Caddy front with no Python at all)
#   BENCH_OPEN_LOADS="25 50 75 90" (% of the best peer's peak)
#   BENCH_OPEN_DURATION=5s  BENCH_OPEN_WARMUP=1s  BENCH_OPEN_CONNECTIONS=64
#   BENCH_QUIET_WAIT=120 (s to wait, before each measurement, for the machine to
#   be under BENCH_QUIET_BUSY=10 % busy with other jobs; 0 disables the wait)
#   HEARTH_CADDY=bin/caddy  BENCH_RESULTS=results.md  BENCH_CHART=results.png
#   BENCH_BASE_CADDY (a build to compare against: the peer hearth-base joins every
#   app's peers; BENCH_PEERS="hearth hearth-base" BENCH_APPS="hello django" is the
#   A/B of a change; BENCH_BASE_HEARTH_IO=1 gives it the listener wrapper hearth_io,
#   which the Hearth peers always have, for a base build that has the module)
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
H2LOAD=/usr/bin/h2load

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-3s}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
WORKERS=${BENCH_WORKERS:-2}
read -r -a APPS <<<"${BENCH_APPS:-hello django asgi static}"
BASE_PEER=${BENCH_BASE_CADDY:+hearth-base}
read -r -a WSGI_PEERS <<<"${BENCH_WSGI_PEERS:-hearth $BASE_PEER hearth-2g caddy-gunicorn gunicorn nginx-uwsgi caddy-respond}"
read -r -a ASGI_PEERS <<<"${BENCH_ASGI_PEERS:-hearth $BASE_PEER hearth-2g caddy-uvicorn uvicorn uvicorn-nodelay caddy-respond}"
read -r -a STATIC_PEERS <<<"${BENCH_STATIC_PEERS:-hearth $BASE_PEER caddy-files nginx-static}"
read -r -a ONLY_PEERS <<<"${BENCH_PEERS:-}"
read -r -a TLS_APPS <<<"${BENCH_TLS_APPS-hello}"
read -r -a TLS_PEERS <<<"${BENCH_TLS_PEERS-hearth $BASE_PEER nginx-uwsgi caddy-respond}"
read -r -a OPEN_APPS <<<"${BENCH_OPEN_APPS-hello django}"
read -r -a OPEN_PEERS <<<"${BENCH_OPEN_PEERS-hearth $BASE_PEER nginx-uwsgi caddy-respond}"
read -r -a OPEN_LOADS <<<"${BENCH_OPEN_LOADS:-25 50 75 90}"
OPEN_DURATION=${BENCH_OPEN_DURATION:-5s}
OPEN_WARMUP=${BENCH_OPEN_WARMUP:-1s}
OPEN_CONNECTIONS=${BENCH_OPEN_CONNECTIONS:-64}
OUT_MD=${BENCH_RESULTS:-$HERE/results.md}
OUT_PNG=${BENCH_CHART:-$HERE/results.png}
READY_TRIES=${BENCH_READY_TRIES:-150} # × 0.2 s
QUIET_WAIT=${BENCH_QUIET_WAIT:-120}   # s to wait for other jobs to finish before a measurement
QUIET_BUSY=${BENCH_QUIET_BUSY:-10}    # % of all CPUs busy (with no server up) that counts as quiet
STOP_TRIES=150                        # × 0.1 s, then SIGKILL

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for bin in "$PY" "$CADDY" "$GUNICORN" "$UWSGI" "$NGINX" "$WRK" "$H2LOAD" /usr/bin/curl /usr/bin/openssl; do
	[ -x "$bin" ] || die "$bin is missing; \`make bench\` builds bin/caddy and installs the Debian packages (gunicorn uwsgi-core uwsgi-plugin-python3 nginx-light wrk nghttp2-client openssl python3-matplotlib python3-uvicorn)"
done
$PY -c 'import django, matplotlib, uvicorn' 2>/dev/null || die "$PY lacks Django, matplotlib or uvicorn; install python3-django python3-matplotlib python3-uvicorn"
[ -e /usr/lib/uwsgi/plugins/python3_plugin.so ] || die "uWSGI's python3 plugin is missing; install uwsgi-plugin-python3"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a whole number ≥ 1, got $ROUNDS"
for load in "${OPEN_LOADS[@]}"; do
	[[ $load =~ ^[1-9][0-9]?$ ]] || die "BENCH_OPEN_LOADS are percentages from 1 to 99, got $load"
done

# --- scratch -----------------------------------------------------------------
SCRATCH=$HERE/scratch
RUN=$SCRATCH/run-$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$RUN"
ln -sfn "$(basename "$RUN")" "$SCRATCH/latest"
# Keep the five newest run directories.
ls -1d "$SCRATCH"/run-* 2>/dev/null | sort | head -n -5 | while read -r old; do rm -rf -- "$old"; done
MEASUREMENTS=$RUN/measurements.tsv
printf 'round\tposition\tapp\tpeer\tdir\tkind\n' >"$MEASUREMENTS"
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
# The open-loop generator, built from tests/bench/loadgen for this run.
LOADGEN=$RUN/loadgen
if ((${#OPEN_APPS[@]} > 0 && ${#OPEN_PEERS[@]} > 0)); then
	(cd "$ROOT" && go build -o "$LOADGEN" ./tests/bench/loadgen) || die "could not build tests/bench/loadgen (needs Go, as bin/caddy does)"
fi
# The static app's file: 2 KiB of CSS-like text, the same in every run.
STATIC_DIR=$RUN/www
mkdir -p "$STATIC_DIR/static/css"
$PY -c 'import sys
line = "/* hearth bench */ .c%d { margin: 0 auto; padding: 1em 2em; color: #333; }\n"
text = "".join(line % i for i in range(64))[:2048]
open(sys.argv[1], "w").write(text)' "$STATIC_DIR/static/css/site.css"
# One certificate for every TLS peer: ECDSA P-256, for 127.0.0.1.
CERT=$RUN/tls/cert.pem KEY=$RUN/tls/key.pem
if ((${#TLS_APPS[@]} > 0 && ${#TLS_PEERS[@]} > 0)); then
	mkdir -p "$RUN/tls"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
		-addext subjectAltName=IP:127.0.0.1 -keyout "$KEY" -out "$CERT" 2>"$RUN/tls/openssl.log" ||
		die "openssl could not make the bench certificate: $(cat "$RUN/tls/openssl.log")"
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
		if body=$(curl -s --max-time 2 --cacert "$CERT" "$url" 2>/dev/null) && [[ $body == *"$expected"* ]]; then
			return 0
		fi
		sleep 0.2
	done
	log "$url did not answer \"$expected\" after $READY_TRIES tries; last body: ${body:0:200}"
	show_logs "$dir"
	return 1
}

wait_socket() { # path dir pid: until the upstream answers HTTP on its unix socket, so
	# the Caddy in front of it is never asked before it can answer (no 502 in its log;
	# a socket file alone is not enough: uvicorn binds it well before it listens)
	local path=$1 dir=$2 pid=$3 i
	for ((i = 0; i < READY_TRIES; i++)); do
		curl -s -o /dev/null --max-time 2 --unix-socket "$path" http://localhost/ && return 0
		if ! alive "$pid"; then
			log "a server (pid $pid) exited before it listened on $path"
			show_logs "$dir"
			return 1
		fi
		sleep 0.2
	done
	log "nothing answered on $path after $READY_TRIES tries"
	show_logs "$dir"
	return 1
}

# --- apps --------------------------------------------------------------------
app_setup() { # app → APP_KIND (wsgi|asgi|static) APP_DIR APP_MODULE APP_BODY APP_PATH
	APP_PATH=/
	case $1 in
	hello) APP_KIND=wsgi APP_DIR=$ROOT/tests/apps APP_MODULE=hello:application APP_BODY='Hello, world!' ;;
	django) APP_KIND=wsgi APP_DIR=$HERE/djangoapp APP_MODULE=benchsite.wsgi:application APP_BODY='hello' ;;
	asgi) APP_KIND=asgi APP_DIR=$HERE APP_MODULE=asgi_hello:app APP_BODY='Hello, world!' ;;
	static) APP_KIND=static APP_DIR=$STATIC_DIR APP_MODULE='' APP_BODY='/* hearth bench */ .c0 {' APP_PATH=/static/css/site.css ;;
	*) die "unknown app $1 (known: hello django asgi static)" ;;
	esac
}

intersect() { # list-a… -- list-b… → OUT: the items of a that are in b, in a's order
	local a=() p q
	OUT=()
	while [ "$1" != -- ]; do a+=("$1"); shift; done
	shift
	for p in "${a[@]+"${a[@]}"}"; do
		for q in "$@"; do
			if [ "$p" = "$q" ]; then OUT+=("$p"); fi
		done
	done
}

app_peers() { # kind app → APP_PEERS: the peers of the kind of measurement that serve the app, filtered by BENCH_PEERS
	local all
	app_setup "$2"
	case $APP_KIND in
	asgi) all=("${ASGI_PEERS[@]}") ;;
	static) all=("${STATIC_PEERS[@]}") ;;
	*) all=("${WSGI_PEERS[@]}") ;;
	esac
	case $1 in
	tls) intersect "${TLS_PEERS[@]+"${TLS_PEERS[@]}"}" -- "${all[@]}" && all=("${OUT[@]+"${OUT[@]}"}") ;;
	open) intersect "${OPEN_PEERS[@]+"${OPEN_PEERS[@]}"}" -- "${all[@]}" && all=("${OUT[@]+"${OUT[@]}"}") ;;
	esac
	APP_PEERS=("${all[@]+"${all[@]}"}")
	if ((${#ONLY_PEERS[@]} > 0)); then
		intersect "${ONLY_PEERS[@]}" -- "${all[@]+"${all[@]}"}"
		APP_PEERS=("${OUT[@]+"${OUT[@]}"}")
	fi
}

# --- peers -------------------------------------------------------------------
caddy_config() { # file admin-port port site-body (TLS=1: HTTPS with the run's certificate)
	local tls=''
	if [ "${TLS:-0}" = 1 ]; then
		tls="	tls $CERT $KEY {
		protocols tls1.3
	}"
	fi
	local wrappers=''
	if [ "${HEARTH_IO:-0}" = 1 ]; then # as README and `caddy hearth init` have it
		wrappers="
		listener_wrappers {
			hearth_io
			tls
		}"
	fi
	cat >"$1" <<EOF
{
	admin 127.0.0.1:$2
	auto_https off
	persist_config off
	servers {
		protocols h1 h2$wrappers
	}
}

:$3 {
	bind 127.0.0.1
$tls
$4
}
EOF
}

start_caddy() { # dir site-body [binary [env…]] → PID PORT
	local dir=$1 binary=${3:-$CADDY}
	PORT=$(freeport)
	caddy_config "$dir/Caddyfile" "$(freeport)" "$PORT" "$2"
	start "$dir/caddy.log" env "${@:4}" "$binary" run --config "$dir/Caddyfile" --adapter caddyfile
}

start_gunicorn() { # dir bind → PID
	start "$1/gunicorn.log" "$GUNICORN" --workers "$WORKERS" --worker-class sync \
		--bind "$2" --chdir "$APP_DIR" "$APP_MODULE"
}

nginx_config() { # dir port socket (TLS=1: HTTPS with the run's certificate, HTTP/2 offered; socket "": serve APP_DIR's files)
	local listen="listen 127.0.0.1:$2;"
	if [ "${TLS:-0}" = 1 ]; then
		listen="listen 127.0.0.1:$2 ssl http2;
		ssl_certificate $CERT;
		ssl_certificate_key $KEY;
		ssl_protocols TLSv1.3;"
	fi
	mkdir -p "$1/tmp"
	local location="			root $APP_DIR;
			types { text/css css; }"
	if [ -n "$3" ]; then
		location="			uwsgi_pass unix:$3;
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
			uwsgi_param SERVER_NAME \$server_name;"
	fi
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
		$listen
		location / {
$location
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
	wsgi:caddy-gunicorn | wsgi:gunicorn | wsgi:nginx-uwsgi | asgi:caddy-uvicorn | asgi:uvicorn | asgi:uvicorn-nodelay | static:caddy-files | static:nginx-static) ;;
	static:hearth | static:hearth-base) ;;
	static:*) die "peer $peer does not serve files" ;;
	*:hearth | *:hearth-base | *:hearth-2g | *:caddy-respond) ;;
	*) die "peer $peer does not serve $APP_KIND apps like $1" ;;
	esac
	case $peer in
	hearth | hearth-base | hearth-2g)
		local binary=$CADDY env=() HEARTH_IO=1
		if [ "$peer" = hearth-base ]; then
			binary=${BENCH_BASE_CADDY:?hearth-base runs the build BENCH_BASE_CADDY names}
			HEARTH_IO=${BENCH_BASE_HEARTH_IO:-0}
		elif [ "$peer" = hearth-2g ]; then
			env=(GOMEMLIMIT=1843MiB) # 90% of 2 GiB; caddy_gc_floor auto: a 128th of it, 14 MiB
		fi
		if [ "$APP_KIND" = static ]; then # as a site with an app serves its static files
			start_caddy "$dir" "	handle /app/* {
		wsgi hello:application {
			dir $ROOT/tests/apps
			python $PY
			workers $WORKERS
		}
	}
	handle {
		root * $APP_DIR
		file_server
	}" "$binary" "${env[@]}"
			PEER_PIDS+=("$PID")
			URL=http://127.0.0.1:$PORT$APP_PATH
			return 0
		fi
		start_caddy "$dir" "	$APP_KIND $APP_MODULE {
		dir $APP_DIR
		python $PY
		workers $WORKERS
	}" "$binary" "${env[@]}"
		PEER_PIDS+=("$PID")
		;;
	caddy-respond)
		start_caddy "$dir" "	respond \"$APP_BODY\" 200"
		PEER_PIDS+=("$PID")
		;;
	caddy-files)
		start_caddy "$dir" "	root * $APP_DIR
	file_server"
		PEER_PIDS+=("$PID")
		;;
	nginx-static)
		PORT=$(freeport)
		nginx_config "$dir" "$PORT" ""
		start "$dir/nginx.log" "$NGINX" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log"
		PEER_PIDS+=("$PID")
		;;
	caddy-gunicorn)
		sock=$(mktemp -u "$SOCKDIR/g.XXXX").sock
		start_gunicorn "$dir" "unix:$sock"
		PEER_PIDS+=("$PID")
		wait_socket "$sock" "$dir" "$PID" || die "gunicorn did not start for caddy-gunicorn"
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
		wait_socket "$sock" "$dir" "$PID" || die "uvicorn did not start for caddy-uvicorn"
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
	*) die "unknown peer $peer (known: hearth hearth-base hearth-2g caddy-gunicorn gunicorn nginx-uwsgi caddy-uvicorn uvicorn uvicorn-nodelay caddy-respond caddy-files nginx-static)" ;;
	esac
	URL=http://127.0.0.1:$PORT$APP_PATH
	[ "${TLS:-0}" = 1 ] && URL=https://127.0.0.1:$PORT$APP_PATH
	return 0
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

closed_load() { # mode duration outfile: wrk (plain HTTP or HTTPS, HTTP/1.1) or h2load (HTTP/2 over TLS)
	if [ "$1" = h2 ]; then
		"$H2LOAD" -t"$THREADS" -c$((CONNECTIONS / 4)) -m4 -D"$2" --log-file="$3.requests" "$URL" >"$3" 2>&1
	else
		"$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$2" --latency --timeout 10s "$URL" >"$3" 2>&1
	fi
}

record() { # kind round position app peer dir
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$2" "$3" "$4" "$5" "$6" "$1" >>"$MEASUREMENTS"
}

start_measured() { # dir app peer: fresh servers, checked, and a closed-loop warm-up
	wait_quiet
	start_peer "$2" "$3" "$1"
	wait_ready "$URL" "$APP_BODY" "$1" "${PEER_PIDS[@]}" || die "$3 did not become ready for $2"
	curl -s -i --max-time 5 --cacert "$CERT" "$URL" >"$1/response.txt" || true
}

finish_measured() { # dir
	curl -s -i --max-time 5 --cacert "$CERT" "$URL" >"$1/response-after.txt" || true
	stop_peer "$1"
}

# A closed-loop measurement (kind closed: plain HTTP; tls-h1, tls-h2: HTTPS).
measure() { # kind round position app peer
	local kind=$1 round=$2 position=$3 app=$4 peer=$5 dir mode=h1 out=wrk.txt rps p99 watcher
	dir=$RUN/$kind-r$round-$app-$peer
	mkdir -p "$dir"
	app_setup "$app"
	TLS=0
	case $kind in
	tls-h1) TLS=1 ;;
	tls-h2) TLS=1 mode=h2 out=h2load.txt ;;
	esac
	start_measured "$dir" "$app" "$peer"
	# wrk-ends.txt: when each load run returned, to tell log lines caused by the
	# client closing its connections with requests in flight from errors under load.
	closed_load "$mode" "$WARMUP" "$dir/warmup.txt"
	date +%s.%N >>"$dir/wrk-ends.txt"
	# Memory: the servers' trees sampled through the measured run (peak RSS, PSS).
	$PY "$HERE/procs.py" memwatch "$dir/memory.json" "${PEER_PIDS[@]}" &
	watcher=$!
	# CPU accounting: the servers' process trees and the machine from /proc
	# (procs.py snapshot), the load generator's own from the shell's `times` of
	# reaped children (a builtin: no fork, so only the generator is reaped
	# between the two).
	$PY "$HERE/procs.py" snapshot "${PEER_PIDS[@]}" >"$dir/cpu-before.json"
	times >"$dir/times-before.txt"
	closed_load "$mode" "$DURATION" "$dir/$out"
	times >"$dir/times-after.txt"
	date +%s.%N >>"$dir/wrk-ends.txt"
	$PY "$HERE/procs.py" snapshot "${PEER_PIDS[@]}" >"$dir/cpu-after.json"
	kill -TERM "$watcher" 2>/dev/null || true
	wait "$watcher" 2>/dev/null || true
	finish_measured "$dir"
	record "$kind" "$round" "$position" "$app" "$peer" "$dir"
	if [ "$mode" = h2 ]; then
		rps=$(awk '/^finished in/ {print $4}' "$dir/$out")
		p99=mean$(awk '/^time for request:/ {print $6}' "$dir/$out")
	else
		rps=$(awk '/^Requests\/sec/ {print $2}' "$dir/$out")
		p99=$(awk '$1 == "99%" {print $2}' "$dir/$out")
	fi
	log "round $round  $(printf '%-7s %-7s %-15s' "$kind" "$app" "$peer") ${rps:-?} req/s  p99 ${p99:-?}$(grep -h -E 'Non-2xx|Socket errors|errored' "$dir/$out" | tr -s ' ' | sed 's/^/  /' | tr '\n' ' ')"
}

# An open-loop measurement: fixed rates, each a share of the app's peak.
measure_open() { # round position app peer peak
	local round=$1 position=$2 app=$3 peer=$4 peak=$5 dir load rate summary
	dir=$RUN/open-r$round-$app-$peer
	mkdir -p "$dir"
	app_setup "$app"
	TLS=0
	start_measured "$dir" "$app" "$peer"
	closed_load h1 "$WARMUP" "$dir/warmup.txt"
	date +%s.%N >>"$dir/wrk-ends.txt"
	summary=''
	for load in "${OPEN_LOADS[@]}"; do
		rate=$((peak * load / 100))
		$PY "$HERE/procs.py" snapshot "${PEER_PIDS[@]}" >"$dir/cpu-before-$load.json"
		"$LOADGEN" -url "$URL" -rate "$rate" -duration "$OPEN_DURATION" -warmup "$OPEN_WARMUP" \
			-connections "$OPEN_CONNECTIONS" -json >"$dir/open-$load.json" 2>"$dir/open-$load.err" ||
			log "loadgen failed at $rate req/s against $peer: $(tail -n 3 "$dir/open-$load.err")"
		date +%s.%N >>"$dir/wrk-ends.txt"
		$PY "$HERE/procs.py" snapshot "${PEER_PIDS[@]}" >"$dir/cpu-after-$load.json"
		summary+=" $load%: $($PY -c 'import json,sys; r=json.load(open(sys.argv[1])); l=r["latency_us"]; print("p50 %.2f p99 %.2f ms" % (l["p50"] / 1e3, l["p99"] / 1e3))' "$dir/open-$load.json" 2>/dev/null || echo '?')"
	done
	finish_measured "$dir"
	record open "$round" "$position" "$app" "$peer" "$dir"
	log "round $round  $(printf '%-7s %-7s %-15s' open "$app" "$peer") peak $peak req/s;$summary"
}

rotated() { # round items… → ORDER: even rounds r rotate the list by r, odd rounds
	# by r+1 and reverse it. 5 items, 3 rounds: ABCDE, BAEDC, CDEAB; 4 items:
	# ABCD, BADC, CDAB; 2 items: AB, BA, AB. So no peer always runs first, last
	# or right after the same peer.
	local r=$1 rot n i items
	shift
	items=("$@")
	n=${#items[@]}
	rot=$((r % 2 == 1 ? r + 1 : r))
	ORDER=()
	for ((i = 0; i < n; i++)); do ORDER+=("${items[(i + rot) % n]}"); done
	if ((r % 2 == 1)); then
		items=("${ORDER[@]}")
		ORDER=()
		for ((i = n - 1; i >= 0; i--)); do ORDER+=("${items[i]}"); done
	fi
	return 0
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
	printf 'open_duration\t%s\nopen_warmup\t%s\nopen_connections\t%s\nopen_loads\t%s\nh2load\t%s\n' \
		"$OPEN_DURATION" "$OPEN_WARMUP" "$OPEN_CONNECTIONS" "${OPEN_LOADS[*]}" "$H2LOAD"
	printf 'started\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	printf 'loadavg_before\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RUN/settings.tsv"

log "run directory $RUN"
# The plan: which peers serve which app in each kind of measurement.
declare -A PLAN=()
plan_kind() { # kind apps…
	local kind=$1 app
	shift
	for app in "$@"; do
		app_peers "$kind" "$app"
		if ((${#APP_PEERS[@]} == 0)); then
			[ "$kind" = closed ] && die "no peer of BENCH_PEERS=${ONLY_PEERS[*]} serves the $app app"
			continue
		fi
		PLAN[$kind:$app]="${APP_PEERS[*]}"
		log "  $kind $app: ${APP_PEERS[*]}"
	done
}
log "${#APPS[@]} apps × their peers × $ROUNDS rounds, wrk -t$THREADS -c$CONNECTIONS -d$DURATION after a ${WARMUP} warm-up"
plan_kind closed "${APPS[@]}"
plan_kind tls "${TLS_APPS[@]+"${TLS_APPS[@]}"}"
plan_kind open "${OPEN_APPS[@]+"${OPEN_APPS[@]}"}"

# The closed-loop rounds over plain HTTP, then over TLS (both HTTP versions in
# the same round, alternated with the peers).
for kind in closed tls; do
	if [ "$kind" = closed ]; then kind_apps=("${APPS[@]}"); else kind_apps=("${TLS_APPS[@]+"${TLS_APPS[@]}"}"); fi
	for ((r = 0; r < ROUNDS; r++)); do
		rotated "$r" "${kind_apps[@]+"${kind_apps[@]}"}"
		for app in "${ORDER[@]+"${ORDER[@]}"}"; do
			[ -n "${PLAN[$kind:$app]:-}" ] || continue
			read -r -a peers <<<"${PLAN[$kind:$app]}"
			runs=()
			for peer in "${peers[@]}"; do
				if [ "$kind" = closed ]; then runs+=("closed/$peer"); else runs+=("tls-h1/$peer" "tls-h2/$peer"); fi
			done
			rotated "$r" "${runs[@]}"
			pos=0
			for run in "${ORDER[@]}"; do
				pos=$((pos + 1))
				measure "${run%%/*}" $((r + 1)) "$pos" "$app" "${run#*/}"
			done
		done
	done
done

# The open-loop rounds, at shares of each app's best median peak so far.
for ((r = 0; r < ROUNDS; r++)); do
	rotated "$r" "${OPEN_APPS[@]+"${OPEN_APPS[@]}"}"
	for app in "${ORDER[@]+"${ORDER[@]}"}"; do
		[ -n "${PLAN[open:$app]:-}" ] || continue
		peak=$($PY "$HERE/report.py" --peak "$RUN" "$app") || die "no closed-loop peak for $app to set the open-loop rates from: add it to BENCH_APPS"
		read -r -a peers <<<"${PLAN[open:$app]}"
		rotated "$r" "${peers[@]}"
		pos=0
		for peer in "${ORDER[@]}"; do
			pos=$((pos + 1))
			measure_open $((r + 1)) "$pos" "$app" "$peer" "$peak"
		done
	done
done
printf 'finished\t%s\nloadavg_after\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/settings.tsv"

$PY "$HERE/report.py" "$RUN" "$OUT_MD" "$OUT_PNG"
log "wrote $OUT_MD and $OUT_PNG"
