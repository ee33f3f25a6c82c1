"""Hearth worker runtime: serves one WSGI application to Caddy.

Caddy launches this file with the app's interpreter and environment and
passes one connected stream socket per request slot (HEARTH_FDS). Requests
arrive over Hearth's framed protocol (see modules/protocol in the Go code),
already parsed by Caddy; this process never talks HTTP and never sees the
internet. Standard library only; Python 3.9+.
"""

import faulthandler
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback

HEADER = struct.Struct('!IBBI')  # payload length, type, flags, stream id
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 1 << 20

HELLO, FATAL, REQ_HEAD, REQ_BODY, RESP_HEAD, RESP_BODY, ABORT, FORK = range(1, 9)
END = 1

_pack = HEADER.pack
_unpack = HEADER.unpack


class ProtocolError(Exception):
    """The peer sent something that is not a valid Hearth frame sequence."""


def frames(kind, sid, data, last):
    """Encode data as one or more frames of kind; the last one flagged END if last."""
    if len(data) <= MAX_PAYLOAD:
        return _pack(len(data), kind, END if last else 0, sid) + data
    view = memoryview(data)
    out = []
    for start in range(0, len(data), MAX_PAYLOAD):
        part = view[start:start + MAX_PAYLOAD]
        final = last and start + MAX_PAYLOAD >= len(data)
        out.append(_pack(len(part), kind, END if final else 0, sid))
        out.append(part)
    return b''.join(out)


class Channel:
    """One request slot: a socket to Caddy, read through a buffer."""

    def __init__(self, sock):
        self.sock = sock
        self.rfile = sock.makefile('rb', 65536)
        self.send = sock.sendall

    def read_frame(self):
        """Return (type, flags, stream, payload), or None at a clean end of stream."""
        head = self.rfile.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE:
            if not head:
                return None
            raise ProtocolError('truncated frame header (%d of %d bytes)' % (len(head), HEADER_SIZE))
        size, kind, flags, sid = _unpack(head)
        if size > MAX_PAYLOAD:
            raise ProtocolError('frame announces %d bytes, more than the maximum %d' % (size, MAX_PAYLOAD))
        payload = self.rfile.read(size) if size else b''
        if len(payload) < size:
            raise ProtocolError('truncated frame payload (%d of %d bytes)' % (len(payload), size))
        return kind, flags, sid, payload


class Input:
    """wsgi.input: the request body, read from body frames as the app asks for it."""

    def __init__(self, channel, done):
        self.channel = channel
        self.buf = bytearray()
        self.pos = 0
        self.done = done

    def _fill(self):
        if self.done:
            return False
        frame = self.channel.read_frame()
        if frame is None:
            raise ProtocolError('connection closed in the middle of a request body')
        kind, flags, _, payload = frame
        if kind != REQ_BODY:
            raise ProtocolError('expected a request-body frame, got type %d' % kind)
        if flags & END:
            self.done = True
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += payload
        return True

    def _take(self, end):
        data = bytes(self.buf[self.pos:end])
        self.pos = end
        return data

    def read(self, size=-1):
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self.buf))
        while len(self.buf) - self.pos < size and self._fill():
            pass
        return self._take(min(len(self.buf), self.pos + size))

    def readline(self, size=-1):
        while True:
            nl = self.buf.find(b'\n', self.pos)
            if nl >= 0:
                end = nl + 1
                break
            if 0 <= size <= len(self.buf) - self.pos or not self._fill():
                end = len(self.buf)
                break
        if size is not None and size >= 0:
            end = min(end, self.pos + size)
        return self._take(end)

    def readlines(self, hint=-1):
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint < total:
                break
        return lines

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def drain(self):
        """Discard what the app did not read, up to the end of the body."""
        while self._fill():
            self.buf.clear()
            self.pos = 0


class Worker:
    """Serves requests on its channels with one WSGI application."""

    def __init__(self, app, name, threads):
        self.app = app
        self.name = name
        self.base_environ = {
            'wsgi.version': (1, 0),
            'wsgi.multithread': threads > 1,
            'wsgi.multiprocess': True,
            'wsgi.run_once': False,
            'wsgi.errors': sys.stderr,
            'SCRIPT_NAME': '',
        }

    def serve(self, channel):
        """Serve requests on channel until Caddy closes it."""
        try:
            while True:
                frame = channel.read_frame()
                if frame is None:
                    return
                kind, flags, sid, payload = frame
                if kind != REQ_HEAD:
                    raise ProtocolError('expected a request-head frame, got type %d' % kind)
                self.handle(channel, sid, payload, flags & END)
        except ProtocolError as exc:
            sys.stderr.write('hearth worker %d: protocol error from Caddy: %s; closing the connection\n'
                             % (os.getpid(), exc))
            channel.sock.close()
            os._exit(3)
        except OSError as exc:
            sys.stderr.write('hearth worker %d: connection to Caddy lost: %s\n' % (os.getpid(), exc))
            os._exit(3)

    def handle(self, channel, sid, payload, no_body):
        fields = payload.decode('latin-1').split('\0')
        environ = self.base_environ.copy()
        pairs = iter(fields)
        environ.update(zip(pairs, pairs))
        body = Input(channel, no_body)
        environ['wsgi.input'] = body
        send = channel.send
        state = [None, None, False]  # status, headers, head sent

        def head_frame():
            status, headers = state[0], state[1]
            parts = [status]
            for name, value in headers:
                parts.append(name)
                parts.append(value)
            state[2] = True
            head = '\0'.join(parts).encode('latin-1')
            return _pack(len(head), RESP_HEAD, 0, sid) + head

        def write(data):
            if state[0] is None:
                raise AssertionError('write() called before start_response()')
            if not state[2]:
                send(head_frame() + frames(RESP_BODY, sid, data, False))
            elif data:
                send(frames(RESP_BODY, sid, data, False))

        def start_response(status, headers, exc_info=None):
            if exc_info:
                try:
                    if state[2]:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif state[0] is not None:
                raise AssertionError('start_response() called a second time without exc_info')
            state[0], state[1] = status, headers
            return write

        result = None
        try:
            result = self.app(environ, start_response)
            if type(result) is list or type(result) is tuple:
                data = b''.join(result)
                if state[0] is None:
                    raise AssertionError('the app returned without calling start_response()')
                if state[2]:
                    send(frames(RESP_BODY, sid, data, True))
                else:
                    send(head_frame() + frames(RESP_BODY, sid, data, True))
            else:
                for chunk in result:
                    if chunk:
                        write(chunk)
                if state[0] is None:
                    raise AssertionError('the app returned without calling start_response()')
                if state[2]:
                    send(_pack(0, RESP_BODY, END, sid))
                else:
                    send(head_frame() + _pack(0, RESP_BODY, END, sid))
        except (ProtocolError, OSError):
            raise
        except BaseException as exc:
            self.report_error(environ, exc)
            if state[2]:
                message = ('%s: %s' % (type(exc).__name__, exc)).encode('utf-8', 'replace')[:4096]
                send(_pack(len(message), ABORT, 0, sid) + message)
            else:
                self.send_500(send, sid)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            close = getattr(result, 'close', None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    self.report_error(environ, exc)
        body.drain()

    def report_error(self, environ, exc):
        text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write('Error handling request %s %s\n%s' % (
            environ.get('REQUEST_METHOD', '?'), environ.get('PATH_INFO', '?'), text))
        sys.stderr.flush()

    @staticmethod
    def send_500(send, sid):
        body = b'Internal Server Error\n'
        head = ('500 Internal Server Error\0Content-Type\0text/plain; charset=utf-8\0'
                'Content-Length\0%d' % len(body)).encode('latin-1')
        send(_pack(len(head), RESP_HEAD, 0, sid) + head + _pack(len(body), RESP_BODY, END, sid) + body)


def load_app(spec):
    """Import "module:attribute" (attribute defaults to "application")."""
    module_name, _, attr = spec.partition(':')
    attr = attr or 'application'
    module = __import__(module_name, fromlist=['_'])
    obj = module
    for part in attr.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError('module %r has no attribute %r (from HEARTH app spec %r)'
                                 % (module_name, attr, spec)) from None
    if not callable(obj):
        raise TypeError('%s is a %s, not a callable WSGI application' % (spec, type(obj).__name__))
    return obj


def watch_parent(parent):
    """Exit as soon as Caddy is gone, whatever the app is doing."""
    while True:
        time.sleep(1)
        if os.getppid() != parent:
            os._exit(1)


def serve_forever(app, name, sockets):
    """Run as a worker: greet Caddy on every channel, then serve requests."""
    channels = [Channel(s) for s in sockets]

    def stop_reading(signum, frame):
        # finish the request in progress, take no new one
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    signal.signal(signal.SIGTERM, stop_reading)
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    worker = Worker(app, name, len(channels))
    hello = str(os.getpid()).encode()
    for channel in channels:
        channel.send(_pack(len(hello), HELLO, 0, 0) + hello)
    if len(channels) == 1:
        worker.serve(channels[0])
        return
    threads = [threading.Thread(target=worker.serve, args=(c,), daemon=True) for c in channels]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(1)


def set_parent_death_signal():
    """Die with the parent (the template), like Caddy's own children."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve_as_template(app, name, control):
    """Preload mode: the app is imported; fork a worker for each request
    from Caddy. A fork request carries the worker's channel sockets and its
    stdout and stderr pipes as SCM_RIGHTS file descriptors."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our workers
    parent = os.getppid()
    threading.Thread(target=watch_parent, args=(parent,), daemon=True).start()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, HEADER_SIZE, 64)
        except OSError as exc:
            sys.stderr.write('hearth template %d: control channel failed: %s\n' % (os.getpid(), exc))
            os._exit(3)
        if not data:
            return  # Caddy closed the channel: the pool stopped
        if len(data) != HEADER_SIZE or _unpack(data)[1] != FORK or len(fds) < 3:
            sys.stderr.write('hearth template %d: protocol error from Caddy: bad fork request; exiting\n' % os.getpid())
            os._exit(3)
        channel_fds, out_fd, err_fd = fds[:-2], fds[-2], fds[-1]
        template_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                control.close()
                os.setpgid(0, 0)
                set_parent_death_signal()
                if os.getppid() != template_pid:
                    os._exit(1)  # the template died while we forked
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the app may run subprocesses
                os.dup2(out_fd, 1)
                os.dup2(err_fd, 2)
                os.close(out_fd)
                os.close(err_fd)
                serve_forever(app, name, [socket.socket(fileno=fd) for fd in channel_fds])
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        for fd in fds:
            os.close(fd)
        reply = str(pid).encode()
        control.sendall(_pack(len(reply), FORK, 0, 0) + reply)


# Names that betray a placeholder secret rather than a generated one.
PLACEHOLDER_WORDS = ('changeme', 'change-me', 'change_me', 'secret', 'password', 'your', 'example',
                     'insecure', 'default', 'dummy', 'test', 'xxx', 'todo', 'replace', 'django')


def describe_secret(value):
    """Facts about a secret key that judge its strength without revealing it."""
    if value is None:
        return {'present': False}
    if isinstance(value, bytes):
        value = value.decode('latin-1')
    value = str(value)
    lowered = value.lower()
    repeated = False
    for size in range(1, len(value) // 2 + 1):
        if len(value) % size == 0 and value[:size] * (len(value) // size) == value:
            repeated = True
            break
    return {
        'present': bool(value),
        'length': len(value),
        'distinct': len(set(value)),
        'insecure_prefix': value.startswith('django-insecure-'),
        'placeholder': repeated or any(w in lowered for w in PLACEHOLDER_WORDS),
    }


def tracked_files_containing(secret):
    """Files tracked by git under the app directory that contain secret
    literally (their names only)."""
    if not secret or len(secret) < 8:
        return []
    import subprocess
    try:
        listing = subprocess.run(['git', 'ls-files', '-z'], capture_output=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    needle = secret.encode('utf-8', 'replace') if isinstance(secret, str) else bytes(secret)
    found = []
    for name in listing.decode('utf-8', 'replace').split('\0'):
        try:
            if name and os.path.getsize(name) <= 1 << 20:
                with open(name, 'rb') as f:
                    if needle in f.read():
                        found.append(name)
        except OSError:
            pass
    return found


def sqlite_databases():
    """SQLite databases of the Django settings, and whether this user can
    write them and their directory (for the journal)."""
    from django.conf import settings
    out = []
    for alias, db in (getattr(settings, 'DATABASES', {}) or {}).items():
        if 'sqlite3' not in str(db.get('ENGINE', '')):
            continue
        name = str(db.get('NAME', ''))
        if not name or name == ':memory:' or name.startswith('file:'):
            continue
        path = os.path.abspath(name)
        directory = os.path.dirname(path)
        out.append({
            'alias': alias,
            'path': path,
            'file_writable': os.access(path, os.W_OK) if os.path.exists(path) else None,
            'dir_writable': os.access(directory, os.W_OK),
        })
    return out


def deploy_checks():
    """Django's own deployment checks (`check --deploy`), including those
    the project silenced, which are marked as such."""
    from django.conf import settings
    from django.core import checks
    silenced = list(getattr(settings, 'SILENCED_SYSTEM_CHECKS', []) or [])
    try:
        settings.SILENCED_SYSTEM_CHECKS = []
        messages = checks.run_checks(include_deployment_checks=True)
    except Exception as exc:  # a check that crashes is reported, not fatal
        return [{'id': 'run', 'level': 40, 'msg': 'the checks failed: %s' % exc, 'silenced': False}]
    finally:
        settings.SILENCED_SYSTEM_CHECKS = silenced
    return [{'id': m.id or '', 'level': m.level, 'msg': str(m.msg), 'hint': str(m.hint or ''),
             'silenced': m.id in silenced} for m in messages if m.level >= checks.WARNING]


def inspect_django():
    from django.conf import settings
    secret = getattr(settings, 'SECRET_KEY', None)
    report = {
        'deploy_checks': deploy_checks(),
        'debug': bool(getattr(settings, 'DEBUG', False)),
        'secret_key': dict(describe_secret(secret), in_files=tracked_files_containing(secret)),
        'sqlite': sqlite_databases(),
        'allowed_hosts': [str(h) for h in getattr(settings, 'ALLOWED_HOSTS', [])],
        'csrf_middleware': 'django.middleware.csrf.CsrfViewMiddleware' in list(getattr(settings, 'MIDDLEWARE', None) or []),
        'csrf_trusted_origins': [str(o) for o in getattr(settings, 'CSRF_TRUSTED_ORIGINS', [])],
        'password_validators': len(getattr(settings, 'AUTH_PASSWORD_VALIDATORS', []) or []),
        'debug_tooling': [a for a in getattr(settings, 'INSTALLED_APPS', [])
                          if str(a).split('.')[0] in ('debug_toolbar', 'django_extensions', 'silk')],
    }
    return report


def inspect_flask(app):
    secret = app.config.get('SECRET_KEY')
    return {
        'debug': bool(getattr(app, 'debug', False)),
        'secret_key': dict(describe_secret(secret), in_files=tracked_files_containing(secret)),
    }


def inspect(app):
    """What the pre-launch guard checks need to know, as JSON-ready data.
    Secret values never leave this function."""
    report = {'framework': 'unknown', 'env_flags': {}}
    for flag in ('FLASK_DEBUG', 'DJANGO_DEBUG', 'PYTHONDEVMODE', 'WERKZEUG_DEBUG_PIN', 'DEBUG'):
        value = os.environ.get(flag)
        if value is not None and value.strip().lower() not in ('', '0', 'false', 'no', 'off'):
            report['env_flags'][flag] = value if flag != 'WERKZEUG_DEBUG_PIN' else 'set'
    conf = sys.modules.get('django.conf')
    if conf is not None and conf.settings.configured:
        report['framework'] = 'django'
        report['django'] = inspect_django()
        return report
    flask = sys.modules.get('flask')
    if flask is not None:
        debugger = type(app).__name__ == 'DebuggedApplication'  # Werkzeug's debugger around the app
        target = getattr(app, 'app', None) if debugger else app
        if isinstance(target, flask.Flask):
            report['framework'] = 'flask'
            report['flask'] = dict(inspect_flask(target), debugger=debugger)
    return report


def main():
    spec = os.environ.pop('HEARTH_APP')
    name = os.environ.pop('HEARTH_NAME', spec)
    fds = [int(fd) for fd in os.environ.pop('HEARTH_FDS').split(',')]
    app_dir = os.environ.pop('HEARTH_DIR', '') or os.getcwd()
    mode = os.environ.pop('HEARTH_MODE', '')
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
    except BaseException:
        text = traceback.format_exc().encode('utf-8', 'replace')[-MAX_PAYLOAD:]
        sockets[0].sendall(_pack(len(text), FATAL, 0, 0) + text)
        sys.exit(1)
    if mode == 'inspect':
        report = json.dumps(inspect(app)).encode()
        sockets[0].sendall(_pack(len(report), HELLO, 0, 0) + report)
        return
    if mode == 'template':
        hello = str(os.getpid()).encode()
        sockets[0].sendall(_pack(len(hello), HELLO, 0, 0) + hello)
        serve_as_template(app, name, sockets[0])
    else:
        serve_forever(app, name, sockets)


if __name__ == '__main__':
    main()
