"""Hearth worker runtime: serves one WSGI or ASGI application to Caddy.

Caddy launches this file with the app's interpreter and environment and
passes one connected stream socket per channel (HEARTH_FDS). Requests
arrive over Hearth's framed protocol (hearth_runtime/protocol.py; the Go
side is modules/protocol), already parsed by Caddy; this process never
talks HTTP and never sees the internet. The code is the hearth_runtime
package beside this file, imported before the app's directory goes on
sys.path. Standard library only; Python 3.9+.
"""

import faulthandler
import gc
import json
import os
import signal
import socket
import sys
import traceback

from hearth_runtime.protocol import FATAL, HEADER, HELLO, MAX_PAYLOAD
from hearth_runtime.loading import import_urlconf, load_app, route_request_errors
from hearth_runtime.wsgi import serve_forever

_pack = HEADER.pack


def set_cpu_policy(name):
    """Run this process (and the threads and processes it starts) under
    the scheduling policy cpu_policy names: "batch" (SCHED_BATCH: a woken
    worker does not preempt the thread running on its CPU, most often
    Caddy's) or "normal" (SCHED_OTHER); "" leaves it as it is. Only a
    worker under one of those two is switched: SCHED_IDLE, which Caddy's
    administrator chose (chrt -i, systemd's CPUSchedulingPolicy=idle), is
    kept. A policy the system refuses is left as it is and the worker runs
    on: it changes when the worker runs, not what it does. Caddy reads the
    policy each worker ended up with and says so, once per pool
    (engine/cpupolicy.go): a message here would come from every worker."""
    want = {'batch': os.SCHED_BATCH, 'normal': os.SCHED_OTHER}.get(name)
    if want is None:
        return
    try:
        current = os.sched_getscheduler(0)
        if current != want and current in (os.SCHED_OTHER, os.SCHED_BATCH):
            os.sched_setscheduler(0, want, os.sched_param(0))
    except OSError:
        pass


def main():
    set_cpu_policy(os.environ.pop('HEARTH_CPU_POLICY', ''))
    spec = os.environ.pop('HEARTH_APP')
    name = os.environ.pop('HEARTH_NAME', spec)
    fds = [int(fd) for fd in os.environ.pop('HEARTH_FDS').split(',')]
    app_dir = os.environ.pop('HEARTH_DIR', '') or os.getcwd()
    mode = os.environ.pop('HEARTH_MODE', '')
    kind = os.environ.pop('HEARTH_KIND', 'wsgi')
    lifespan = os.environ.pop('HEARTH_LIFESPAN', 'auto')
    for fd in fds:
        os.set_inheritable(fd, False)  # the app's subprocesses never hold a channel
    sockets = [socket.socket(fileno=fd) for fd in fds]

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Caddy decides when workers stop
    # Caddy sends SIGUSR1 to a worker whose request ran past its timeout:
    # every thread's stack goes to stderr (so into Caddy's log), even when
    # the app is stuck outside the interpreter
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        app = load_app(spec)
        import_urlconf()
    except BaseException:
        text = traceback.format_exc().encode('utf-8', 'replace')[-MAX_PAYLOAD:]
        sockets[0].sendall(_pack(len(text), FATAL, 0, 0) + text)
        sys.exit(1)
    if mode == 'inspect':
        from hearth_runtime.inspection import inspect
        report = json.dumps(inspect(app)).encode()
        sockets[0].sendall(_pack(len(report), HELLO, 0, 0) + report)
        return
    route_request_errors()
    # What the import made lives as long as the worker: out of the cyclic
    # collector's reach, a full collection no longer walks it (a Django
    # project's ~46,000 objects: 12 ms of pause, against 0.3 ms after),
    # and a fork server's workers no longer write to the pages they share
    # with it when they collect.
    gc.freeze()
    if kind == 'asgi':
        import asyncio
        from hearth_runtime.asgi import AsgiWorker
        asyncio.run(AsgiWorker(app, name, lifespan).run(sockets))
        return
    if mode == 'fork_server':
        hello = str(os.getpid()).encode()
        sockets[0].sendall(_pack(len(hello), HELLO, 0, 0) + hello)
        from hearth_runtime.forkserver import serve_as_fork_server
        serve_as_fork_server(app, name, sockets[0])
    else:
        serve_forever(app, name, sockets)


if __name__ == '__main__':
    main()
