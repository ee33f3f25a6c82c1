"""The fork server of `preload`: a process that imported the app once and
forks a worker for each fork request from Caddy (Go: forkserver.go)."""

import os
import select
import signal
import socket
import sys
import threading
import traceback

from .protocol import FORK, HEADER, HEADER_SIZE
from .wsgi import serve_forever, watch_parent

_pack = HEADER.pack
_unpack = HEADER.unpack


def set_parent_death_signal():
    """Die with the parent (the fork server), like Caddy's own children."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve_as_fork_server(app, name, control):
    """Preload mode: the app is imported; fork a worker for each request
    from Caddy. A fork request carries the worker's channel sockets and its
    stdout and stderr pipes as SCM_RIGHTS file descriptors."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our workers
    parent = os.getppid()
    threading.Thread(target=watch_parent, args=(parent,), daemon=True).start()
    workers = {}  # pid -> pidfd of each worker forked that may still run
    while True:
        try:
            # close-on-exec from the start: a program the app's threads start
            # meanwhile never holds the next worker's channels
            data, fds, _, _ = socket.recv_fds(control, HEADER_SIZE, 64, socket.MSG_CMSG_CLOEXEC)
        except OSError as exc:
            sys.stderr.write('hearth fork server %d: control channel failed: %s\n' % (os.getpid(), exc))
            os._exit(3)
        if not data:
            # Caddy closed the channel: the pool stopped (its workers were
            # stopped first), or a restart replaced this fork server while
            # its workers finish what they are serving. They die with it
            # (their parent-death signal), so it leaves once they have.
            wait_for_workers(workers)
            # and not through the interpreter's exit, which would wait for
            # any thread the app started at import
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        if len(data) != HEADER_SIZE or _unpack(data)[1] != FORK or len(fds) < 3:
            sys.stderr.write('hearth fork server %d: protocol error from Caddy: bad fork request; exiting\n' % os.getpid())
            os._exit(3)
        channel_fds, out_fd, err_fd = fds[:-2], fds[-2], fds[-1]
        server_pid = os.getpid()
        request = _unpack(data)[3]  # the answer names its request (the stream id)
        try:
            pid = os.fork()
        except OSError as exc:
            # EAGAIN at the account's process limit (max_processes): this
            # worker is not made, the fork server and the others go on
            for fd in fds:
                os.close(fd)
            reply = ('error %d' % (exc.errno or 0)).encode()
            control.sendall(_pack(len(reply), FORK, 0, request) + reply)
            continue
        if pid == 0:
            try:
                control.close()
                for pidfd in workers.values():
                    os.close(pidfd)
                os.setpgid(0, 0)
                set_parent_death_signal()
                if os.getppid() != server_pid:
                    os._exit(1)  # the fork server died while we forked
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the app may run subprocesses
                os.dup2(out_fd, 1)
                os.dup2(err_fd, 2)
                os.close(out_fd)
                os.close(err_fd)
                for fd in channel_fds:
                    os.set_inheritable(fd, False)  # the app's subprocesses never hold a channel
                serve_forever(app, name, [socket.socket(fileno=fd) for fd in channel_fds])
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        for fd in fds:
            os.close(fd)
        track_worker(workers, pid)
        reply = str(pid).encode()
        control.sendall(_pack(len(reply), FORK, 0, request) + reply)


def track_worker(workers, pid):
    """Keeps a pidfd of a worker just forked (its number may be reused once
    it ended; its pidfd names it alone), and closes those of the workers
    that ended."""
    if workers:
        poller = select.poll()
        for pidfd in workers.values():
            poller.register(pidfd, select.POLLIN)
        ended = {fd for fd, _ in poller.poll(0)}  # a pidfd is readable once its process ended
        for old, pidfd in list(workers.items()):
            if pidfd in ended:
                os.close(pidfd)
                del workers[old]
    try:
        workers[pid] = os.pidfd_open(pid)
    except OSError:
        pass  # it ended already, or the kernel has no pidfds (before 5.3)


def wait_for_workers(workers):
    """Returns once every worker in workers has ended."""
    for pidfd in workers.values():
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll()
        os.close(pidfd)
    workers.clear()
