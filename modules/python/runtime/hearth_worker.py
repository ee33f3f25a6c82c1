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
import re
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

HELLO, FATAL, REQ_HEAD, REQ_BODY, RESP_HEAD, RESP_BODY, ABORT, FORK, CANCEL, WS_ACCEPT, WS_MSG, WS_CLOSE = range(1, 13)
END = 1
BINARY = 2

_pack = HEADER.pack
_unpack = HEADER.unpack


class ProtocolError(Exception):
    """The peer sent something that is not a valid Hearth frame sequence."""


class HeaderError(ValueError):
    """The app set a response status or header that no HTTP response may
    carry (a NUL, CR, LF or other control character): sending it would let
    whoever chose the value add headers of their own. The request gets a
    plain 500; the message names the header, never its value."""


class ClientDisconnected(OSError):
    """Raised by an ASGI app's send() once the client is gone (Caddy sent a
    cancel, or the WebSocket's close): an app that only sends learns that
    it may stop, as the ASGI spec asks."""


# Control characters a response head may not hold; NUL is counted apart
# (it separates the fields), a tab is allowed (in values).
_CONTROL = re.compile('[\x01-\x08\x0a-\x1f\x7f]')


def encode_head(status, headers):
    """The response-head payload: the status line and the header pairs,
    NUL-separated, latin-1. Raises HeaderError when a field would not reach
    the client as the app wrote it. Costs one count and one regex search
    over the joined head, in C."""
    parts = [status]
    for name, value in headers:
        parts.append(name)
        parts.append(value)
    try:
        head = '\0'.join(parts)
    except TypeError:
        raise HeaderError(head_problem(parts)) from None
    if head.count('\0') != len(parts) - 1 or _CONTROL.search(head) is not None:
        raise HeaderError(head_problem(parts))
    try:
        data = head.encode('latin-1')
    except UnicodeEncodeError:
        raise HeaderError(head_problem(parts)) from None
    if len(data) > MAX_PAYLOAD:
        raise HeaderError('the response head is %d bytes, more than the %d a response head may have'
                          % (len(data), MAX_PAYLOAD))
    return data


def head_problem(parts):
    """Says which field of a response head is unusable, and why."""
    for i, part in enumerate(parts):
        if i == 0:
            where = 'the status line'
        elif i % 2:
            where = 'a response header name (%r)' % (part[:40] if isinstance(part, str) else type(part).__name__)
        else:
            where = 'the value of response header %r' % (parts[i - 1][:40],)
        if not isinstance(part, str):
            return '%s is a %s, not a str' % (where, type(part).__name__)
        for j, c in enumerate(part):
            if c < ' ' and c != '\t' or c == '\x7f':
                return ('%s holds a control character (%s) at position %d: refused, it would let its '
                        'author add response headers' % (where, CONTROL_NAMES.get(c, '0x%02x' % ord(c)), j))
            if c > '\xff':
                return ('%s holds %r, which is not latin-1: HTTP headers carry latin-1; encode it '
                        '(RFC 8187 for file names, or percent-encoding)' % (where, c))
    return 'the response head is malformed'


CONTROL_NAMES = {'\0': 'NUL', '\r': 'CR', '\n': 'LF', '\t': 'tab'}


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


def declared_length(headers):
    """The Content-Length the app declared, or -1 (none, or not a number)."""
    if headers:
        for name, value in headers:
            if len(name) == 14 and name.lower() == 'content-length':
                try:
                    return max(int(value), -1)
                except (TypeError, ValueError):
                    return -1
    return -1


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
        if not len(fields) & 1:  # pairs, each ended by a NUL, then ''
            raise ProtocolError('malformed request head (%d fields)' % len(fields))
        environ = self.base_environ.copy()
        pairs = iter(fields)
        environ.update(zip(pairs, pairs))
        body = Input(channel, no_body)
        environ['wsgi.input'] = body
        send = channel.send
        state = [None, None, False]  # status, headers, head sent

        def head_frame():
            head = encode_head(state[0], state[1])
            state[2] = True
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
                expected, sent = None, 0
                for chunk in result:
                    if not chunk:
                        continue
                    if expected is None:
                        expected = declared_length(state[1])
                    if sent + len(chunk) >= expected >= 0:
                        # the declared length is complete: this chunk ends
                        # the body (one frame for the usual one-chunk body)
                        last = frames(RESP_BODY, sid, chunk[:expected - sent], True)
                        send(last if state[2] else head_frame() + last)
                        break
                    write(chunk)
                    sent += len(chunk)
                else:
                    if state[0] is None:
                        raise AssertionError('the app returned without calling start_response()')
                    end = _pack(0, RESP_BODY, END, sid)
                    send(end if state[2] else head_frame() + end)
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
        sys.stderr.write('Error handling request %s %r\n%s' % (
            environ.get('REQUEST_METHOD', '?'), environ.get('PATH_INFO', '?'), text))
        sys.stderr.flush()

    @staticmethod
    def send_500(send, sid):
        body = b'Internal Server Error\n'
        head = ('500 Internal Server Error\0Content-Type\0text/plain; charset=utf-8\0'
                'Content-Length\0%d' % len(body)).encode('latin-1')
        send(_pack(len(head), RESP_HEAD, 0, sid) + head + _pack(len(body), RESP_BODY, END, sid) + body)


def asgi_channel_class():
    """AsgiChannel, defined on first use: asyncio is imported only by ASGI
    workers."""
    import asyncio

    class AsgiChannel(asyncio.Protocol):
        """One channel to Caddy for an ASGI worker. Frames are parsed as they
        arrive (no reader task between the socket and the request) and
        routed to the request in progress, which runs as its own task; the
        channel is also that request's writer (write, drain)."""

        def __init__(self, worker):
            self.worker = worker
            self.buffer = bytearray()  # a frame not complete yet
            self.needed = HEADER_SIZE  # bytes the buffer needs before it is parsed again
            self.request = None  # (stream id, its events queue, its task)
            self.loop = asyncio.get_running_loop()
            self.closed = self.loop.create_future()  # done when Caddy closed it and its request ended
            self.paused = False
            self.drain_waiters = []
            self.lost = None

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if self.buffer:  # the rest of a frame that began earlier
                self.buffer += data
                if len(self.buffer) < self.needed:
                    return
                data = bytes(self.buffer)
                self.buffer.clear()
            offset, n = 0, len(data)
            try:
                while n - offset >= HEADER_SIZE:
                    size, kind, flags, sid = HEADER.unpack_from(data, offset)
                    if size > MAX_PAYLOAD:
                        raise ProtocolError('frame announces %d bytes, more than the maximum %d' % (size, MAX_PAYLOAD))
                    end = offset + HEADER_SIZE + size
                    if n < end:
                        break
                    self.route(kind, flags, sid, data[offset + HEADER_SIZE:end])
                    offset = end
            except ProtocolError as exc:
                sys.stderr.write('hearth worker %d: protocol error from Caddy: %s; closing the connection\n' % (os.getpid(), exc))
                os._exit(3)
            if offset < n:
                self.buffer += memoryview(data)[offset:]
                self.needed = HEADER_SIZE + (HEADER.unpack_from(data, offset)[0] if n - offset >= HEADER_SIZE else 0)

        def route(self, kind, flags, sid, payload):
            request = self.request
            if kind == REQ_HEAD:
                # (the previous request's task may still be reading the
                # frames routed to it; it finishes on its own)
                events = asyncio.Queue()
                events.peer_closed = False  # a cancel or a WebSocket close came
                task = self.loop.create_task(self.worker.handle(self, sid, payload, bool(flags & END), events))
                self.request = (sid, events, task)
            elif kind in (REQ_BODY, CANCEL, WS_MSG, WS_CLOSE) and request is not None and sid == request[0]:
                if kind in (CANCEL, WS_CLOSE):
                    request[1].peer_closed = True
                request[1].put_nowait((kind, flags, payload))
            elif kind not in (CANCEL, WS_MSG, WS_CLOSE):  # those may come for a request that already ended
                raise ProtocolError('unexpected frame type %d for stream %d' % (kind, sid))

        def eof_received(self):
            return False  # close the transport: connection_lost follows

        def connection_lost(self, exc):
            if self.buffer:
                sys.stderr.write('hearth worker %d: protocol error from Caddy: truncated frame; closing the connection\n' % os.getpid())
                os._exit(3)
            if exc is not None:
                sys.stderr.write('hearth worker %d: connection to Caddy lost: %s\n' % (os.getpid(), exc))
                os._exit(3)
            self.lost = ConnectionResetError('Connection lost')
            self.resume_writing()
            if self.request is None:
                self.closed.set_result(None)
                return
            self.request[1].peer_closed = True
            self.request[1].put_nowait(None)
            self.request[2].add_done_callback(lambda _: self.closed.done() or self.closed.set_result(None))

        # -- the writer side, for the request in progress --------------------

        def write(self, data):
            self.transport.write(data)

        async def drain(self):
            """Wait while the socket's buffer is full: a slow client slows
            the app down."""
            if self.lost is not None:
                raise self.lost
            if self.paused:
                waiter = self.loop.create_future()
                self.drain_waiters.append(waiter)
                await waiter
                if self.lost is not None:
                    raise self.lost

        def pause_writing(self):
            self.paused = True

        def resume_writing(self):
            self.paused = False
            waiters, self.drain_waiters = self.drain_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    return AsgiChannel


class AsgiWorker:
    """Serves an ASGI 3 application: one asyncio loop, one AsgiChannel per
    channel and a task per request, so a worker runs as many requests at
    once as it has channels (max_concurrency); lifespan startup runs before
    the worker says hello."""

    def __init__(self, app, name, lifespan):
        self.app = app
        self.name = name
        self.lifespan = lifespan
        self.state = {}
        self.busy = 0

    # -- lifespan ----------------------------------------------------------

    async def startup(self):
        """Run the lifespan startup; return an error text, or None."""
        import asyncio
        if self.lifespan == 'off':
            return None
        loop = asyncio.get_running_loop()
        self.lifespan_queue = asyncio.Queue()
        started = loop.create_future()
        self.lifespan_shutdown = loop.create_future()

        async def receive():
            return await self.lifespan_queue.get()

        async def send(message):
            kind = message['type']
            if kind == 'lifespan.startup.complete' and not started.done():
                started.set_result(None)
            elif kind == 'lifespan.startup.failed' and not started.done():
                started.set_result('lifespan startup failed: %s' % (message.get('message') or 'no message'))
            elif kind in ('lifespan.shutdown.complete', 'lifespan.shutdown.failed') and not self.lifespan_shutdown.done():
                self.lifespan_shutdown.set_result(message.get('message'))

        async def run():
            scope = {'type': 'lifespan', 'asgi': {'version': '3.0', 'spec_version': '2.0'}, 'state': self.state}
            try:
                await self.app(scope, receive, send)
            except BaseException as exc:
                text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                if not started.done():
                    if self.lifespan == 'on':
                        started.set_result('the app failed in lifespan startup:\n' + text)
                    else:  # auto: an app without lifespan support
                        sys.stderr.write('lifespan not supported by the app; continuing without it\n')
                        self.lifespan = 'off'
                        started.set_result(None)
            if not started.done():
                if self.lifespan == 'on':
                    started.set_result('the app returned from lifespan without completing startup')
                else:  # auto: the app ignores lifespan scopes
                    self.lifespan = 'off'
                    started.set_result(None)
            if not self.lifespan_shutdown.done():
                self.lifespan_shutdown.set_result(None)

        self.lifespan_task = asyncio.ensure_future(run())
        await self.lifespan_queue.put({'type': 'lifespan.startup'})
        return await started

    async def shutdown(self):
        import asyncio
        if self.lifespan == 'off':
            return
        await self.lifespan_queue.put({'type': 'lifespan.shutdown'})
        try:
            await asyncio.wait_for(asyncio.shield(self.lifespan_shutdown), 30)
        except asyncio.TimeoutError:
            sys.stderr.write('lifespan shutdown did not complete within 30s\n')

    # -- requests ----------------------------------------------------------

    async def open_channels(self, sockets):
        """Greet Caddy on every channel and serve each with an AsgiChannel."""
        import asyncio
        loop = asyncio.get_running_loop()
        hello = str(os.getpid()).encode()
        channel_class = asgi_channel_class()
        channels = []
        for s in sockets:
            s.sendall(_pack(len(hello), HELLO, 0, 0) + hello)
            s.setblocking(False)
            _, channel = await loop.create_connection(lambda: channel_class(self), sock=s)
            channels.append(channel)
        return channels

    def scope(self, env):
        headers = []
        for key, value in env.items():
            if key.startswith('HTTP_'):
                headers.append((key[5:].replace('_', '-').lower().encode('latin-1'), value.encode('latin-1')))
            elif key in ('CONTENT_TYPE', 'CONTENT_LENGTH'):
                headers.append((key.replace('_', '-').lower().encode('latin-1'), value.encode('latin-1')))
        protocol = env.get('SERVER_PROTOCOL', 'HTTP/1.1').split('/')[-1]
        raw_path = env.get('REQUEST_URI', '').split('?')[0].encode('latin-1')
        path = env.get('PATH_INFO', '/').encode('latin-1').decode('utf-8', 'replace')
        return {
            'type': 'http', 'asgi': {'version': '3.0', 'spec_version': '2.3'},
            'http_version': '2' if protocol.startswith('2') else ('1.0' if protocol == '1.0' else '1.1'),
            'method': env.get('REQUEST_METHOD', 'GET'), 'scheme': env.get('wsgi.url_scheme', 'http'),
            'path': path, 'raw_path': raw_path or path.encode('utf-8'),
            'query_string': env.get('QUERY_STRING', '').encode('latin-1'),
            'root_path': env.get('SCRIPT_NAME', ''), 'headers': headers,
            'client': [env.get('REMOTE_ADDR', ''), port_number(env.get('REMOTE_PORT'))],
            'server': [env.get('SERVER_NAME', ''), port_number(env.get('SERVER_PORT'))],
            'state': dict(self.state),
        }

    async def handle(self, writer, sid, payload, no_body, events):
        import asyncio
        fields = payload.decode('latin-1').split('\0')
        if not len(fields) & 1:  # pairs, each ended by a NUL, then ''
            raise ProtocolError('malformed request head (%d fields)' % len(fields))
        pairs = iter(fields)
        env = dict(zip(pairs, pairs))
        try:
            scope = self.scope(env)
        except Exception:
            sys.stderr.write('Error building the ASGI scope of %r\n%s' % (env.get('PATH_INFO'), traceback.format_exc()))
            Worker.send_500(writer.write, sid)
            return
        if env.get('hearth.websocket') == '1':
            return await self.handle_websocket(writer, sid, scope, events)
        state = {'body_done': no_body, 'body_sent': False, 'disconnected': False, 'started': False,
                 'ended': False, 'head': None}
        self.busy += 1

        async def next_event():
            event = await events.get()
            if event is None or event[0] == CANCEL:
                state['disconnected'] = True
                return None
            return event

        async def receive():
            if not state['body_done'] and not state['disconnected']:
                event = await next_event()
                if event is not None:
                    _, flags, body = event
                    state['body_done'] = state['body_sent'] = bool(flags & END)
                    return {'type': 'http.request', 'body': body, 'more_body': not state['body_done']}
            if not state['body_sent']:  # a request without a body still gets one http.request
                state['body_sent'] = True
                return {'type': 'http.request', 'body': b'', 'more_body': False}
            while not state['disconnected']:
                await next_event()  # only a cancel (or the end) can come now
            return {'type': 'http.disconnect'}

        async def send(message):
            kind = message['type']
            if kind == 'http.response.start':
                if state['started']:
                    raise RuntimeError('http.response.start sent twice')
                status = int(message['status'])
                head = encode_head('%d %s' % (status, STATUS_TEXT.get(status, 'Status')), [
                    (name.decode('latin-1') if isinstance(name, bytes) else str(name),
                     value.decode('latin-1') if isinstance(value, bytes) else str(value))
                    for name, value in message.get('headers', [])])
                state['head'] = _pack(len(head), RESP_HEAD, 0, sid) + head
                state['started'] = True
            elif kind == 'http.response.body':
                if not state['started']:
                    raise RuntimeError('http.response.body before http.response.start')
                if state['ended']:
                    return
                if events.peer_closed:
                    raise ClientDisconnected('the client is gone')
                body = bytes(message.get('body', b''))
                more = bool(message.get('more_body', False))
                data = frames(RESP_BODY, sid, body, not more)
                if state['head'] is not None:
                    data, state['head'] = state['head'] + data, None
                state['ended'] = not more
                writer.write(data)
                await writer.drain()  # a slow client slows the app down
            else:
                raise RuntimeError('unknown ASGI message type %r' % kind)

        try:
            await self.app(scope, receive, send)
            if not state['started']:
                raise RuntimeError('the app returned without sending a response')
            if not state['ended']:
                data = (state['head'] or b'') + _pack(0, RESP_BODY, END, sid)
                state['head'], state['ended'] = None, True
                writer.write(data)
        except ClientDisconnected:
            # the client left: end the stream (Caddy discards the rest)
            if not state['ended']:
                writer.write((state['head'] or b'') + _pack(0, RESP_BODY, END, sid))
                state['head'], state['ended'] = None, True
        except (ProtocolError, OSError):
            raise
        except BaseException as exc:
            text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            sys.stderr.write('Error handling request %s %r\n%s' % (scope['method'], scope['path'], text))
            if not state['started'] or state['head'] is not None:
                Worker.send_500(writer.write, sid)
            elif not state['ended']:
                message = ('%s: %s' % (type(exc).__name__, exc)).encode('utf-8', 'replace')[:4096]
                writer.write(_pack(len(message), ABORT, 0, sid) + message)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.busy -= 1
        await writer.drain()
        # the body the app did not read
        while not state['body_done'] and not state['disconnected']:
            event = await next_event()
            if event is not None:
                state['body_done'] = bool(event[1] & END)

    async def handle_websocket(self, writer, sid, scope, events):
        """A WebSocket: connect, then messages both ways, until a close."""
        scope = dict(scope, type='websocket', scheme='wss' if scope['scheme'] == 'https' else 'ws')
        protocols = [v.decode('latin-1') for k, v in scope['headers'] if k == b'sec-websocket-protocol']
        scope['subprotocols'] = [p.strip() for v in protocols for p in v.split(',') if p.strip()]
        state = {'connected': False, 'accepted': False, 'closed': False, 'ended': False}
        self.busy += 1

        async def receive():
            if not state['connected']:
                state['connected'] = True
                return {'type': 'websocket.connect'}
            if state['closed']:
                return {'type': 'websocket.disconnect', 'code': 1006}
            event = await events.get()
            if event is None or event[0] == CANCEL:
                state['closed'] = True
                return {'type': 'websocket.disconnect', 'code': 1006}
            kind, flags, payload = event
            if kind == WS_CLOSE:
                state['closed'] = True
                code = struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else 1005
                return {'type': 'websocket.disconnect', 'code': code}
            if flags & BINARY:
                return {'type': 'websocket.receive', 'bytes': payload, 'text': None}
            return {'type': 'websocket.receive', 'text': payload.decode('utf-8', 'replace'), 'bytes': None}

        async def send(message):
            kind = message['type']
            if kind == 'websocket.accept':
                sub = (message.get('subprotocol') or '').encode('latin-1')
                state['accepted'] = True
                writer.write(_pack(len(sub), WS_ACCEPT, 0, sid) + sub)
            elif kind == 'websocket.send':
                if state['accepted'] and (state['closed'] or events.peer_closed):
                    raise ClientDisconnected('the WebSocket is closed')
                if not state['accepted']:
                    return
                if message.get('bytes') is not None:
                    data, flags = bytes(message['bytes']), BINARY
                else:
                    data, flags = str(message.get('text', '')).encode('utf-8'), 0
                writer.write(_pack(len(data), WS_MSG, flags, sid) + data)
            elif kind == 'websocket.close':
                if not state['accepted']:  # refused before the handshake: 403
                    body = b'Forbidden\n'
                    head = b'403 Forbidden\0Content-Type\0text/plain\0Content-Length\0' + str(len(body)).encode()
                    writer.write(_pack(len(head), RESP_HEAD, 0, sid) + head + _pack(len(body), RESP_BODY, END, sid) + body)
                    state['ended'] = True
                elif not state['closed']:
                    code = int(message.get('code', 1000))
                    reason = (message.get('reason') or '').encode('utf-8')[:120]
                    payload = struct.pack('!H', code) + reason
                    writer.write(_pack(len(payload), WS_CLOSE, 0, sid) + payload)
                state['closed'] = True
            else:
                raise RuntimeError('unknown ASGI message type %r' % kind)
            await writer.drain()

        try:
            await self.app(scope, receive, send)
        except ClientDisconnected:
            pass  # the app learnt the client was gone; the stream ends below
        except Exception as exc:
            text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            sys.stderr.write('Error in WebSocket %r\n%s' % (scope['path'], text))
            if not state['accepted'] and not state['ended']:
                Worker.send_500(writer.write, sid)
                state['ended'] = True
        finally:
            self.busy -= 1
        if not state['ended']:
            if not state['accepted']:  # the app returned without accepting
                await send({'type': 'websocket.close'})
            else:
                if not state['closed']:
                    payload = struct.pack('!H', 1000)
                    writer.write(_pack(len(payload), WS_CLOSE, 0, sid) + payload)
                writer.write(_pack(0, RESP_BODY, END, sid))  # the channel is free again
        await writer.drain()

    async def run(self, sockets):
        import asyncio
        loop = asyncio.get_running_loop()
        failure = await self.startup()
        if failure:
            text = str(failure).encode('utf-8', 'replace')[-MAX_PAYLOAD:]
            sockets[0].sendall(_pack(len(text), FATAL, 0, 0) + text)
            os._exit(1)
        channels = await self.open_channels(sockets)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        all_done = asyncio.ensure_future(asyncio.wait([c.closed for c in channels]))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([all_done, stopping], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            for c in channels:  # take no new request; finish those running
                try:
                    c.transport.pause_reading()
                except Exception:
                    pass
            deadline = loop.time() + 30
            while self.busy and loop.time() < deadline:
                await asyncio.sleep(0.05)
        await self.shutdown()


STATUS_TEXT = {200: 'OK', 201: 'Created', 204: 'No Content', 301: 'Moved Permanently', 302: 'Found',
               304: 'Not Modified', 307: 'Temporary Redirect', 308: 'Permanent Redirect', 400: 'Bad Request',
               401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
               409: 'Conflict', 413: 'Payload Too Large', 422: 'Unprocessable Entity', 429: 'Too Many Requests',
               500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable'}


def port_number(value):
    """A port from the environ as an int (0 when absent or not a number)."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def nearest_module(name):
    """The importable module whose dotted name is closest to name (a typo
    such as mysite.wgsi for mysite.wsgi), or None."""
    import difflib
    import pkgutil
    parts = name.split('.')
    # the deepest package of name that imports, and the names beside it
    for depth in range(len(parts) - 1, -1, -1):
        prefix = '.'.join(parts[:depth])
        try:
            path = __import__(prefix, fromlist=['_']).__path__ if prefix else None
        except Exception:
            continue
        try:
            names = [m.name for m in pkgutil.iter_modules(path)]
        except Exception:
            return None
        if prefix:
            names = [prefix + '.' + n for n in names]
        close = difflib.get_close_matches('.'.join(parts[:depth + 1]), names, n=1, cutoff=0.6)
        if close:
            return close[0] + ('.' + '.'.join(parts[depth + 1:]) if depth + 1 < len(parts) else '')
        return None
    return None


def load_app(spec):
    """Import "module:attribute" (attribute defaults to "application")."""
    module_name, _, attr = spec.partition(':')
    attr = attr or 'application'
    try:
        module = __import__(module_name, fromlist=['_'])
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + '.')):
            raise  # the app's own import of something else failed: its traceback says what
        hint = nearest_module(module_name)
        fix = ('did you mean %s? (the app is "%s:%s")' % (hint, hint, attr) if hint
               else 'check the module path in the wsgi/asgi line and the `dir` setting')
        raise ModuleNotFoundError('no module %r in %s (looked for by the app %r): %s'
                                  % (module_name, sys.path[0], spec, fix), name=exc.name) from None
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


def import_urlconf():
    """Import a Django project's URLconf, and so its views, now. Django
    imports it at the first request: code that cannot be imported would
    start, then answer every visitor with 500. This way it fails the start
    (or the restart, and the running workers keep serving) with its
    traceback."""
    conf = sys.modules.get('django.conf')
    if conf is None or not conf.settings.configured:
        return
    from django.urls import get_resolver
    get_resolver().url_patterns


def route_request_errors():
    """Make Django's request errors reach Caddy's log.

    With DEBUG off and no LOGGING setting, Django sends an unhandled
    exception in a view to mail_admins only (its console handler wants
    DEBUG): the visitor gets "Server Error (500)" and no log says why.
    Then one handler on the 'django.request' logger writes each such error
    to stderr, which is Caddy's log: once, with the method, the path and
    the traceback. An app that configures LOGGING keeps its own."""
    conf = sys.modules.get('django.conf')
    if conf is None:
        return
    try:
        settings = conf.settings
        if not settings.configured or settings.DEBUG or getattr(settings, 'LOGGING', None):
            return
    except Exception:
        return
    import logging

    class RequestErrors(logging.Formatter):
        def format(self, record):
            request = getattr(record, 'request', None)
            method = getattr(request, 'method', None) or '-'
            return 'request error (%s): %s' % (method, super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(RequestErrors('%(message)s'))
    logging.getLogger('django.request').addHandler(handler)


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
                for fd in channel_fds:
                    os.set_inheritable(fd, False)  # the app's subprocesses never hold a channel
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


def looks_generated(value):
    """True for a key shaped like a generator's output: at least three of
    lower case, upper case, digits and other characters, and at least 24
    distinct characters. Random keys (Django's get_random_secret_key,
    secrets.token_urlsafe, `caddy hearth secret-key`) are, with overwhelming
    probability; phrases written by people are not. A placeholder word found
    by chance inside such a key (about 1 generated key in 300 holds one of
    them) does not make it a placeholder."""
    classes = (any(c.islower() for c in value) + any(c.isupper() for c in value)
               + any(c.isdigit() for c in value) + any(not c.isalnum() for c in value))
    return classes >= 3 and len(set(value)) >= 24


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
    worded = any(w in lowered for w in PLACEHOLDER_WORDS) and not looks_generated(value)
    return {
        'present': bool(value),
        'length': len(value),
        'distinct': len(set(value)),
        'insecure_prefix': value.startswith('django-insecure-'),
        'placeholder': repeated or worded,
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


def migration_state():
    """Which migrations the default database lacks, and which apps have
    model changes without a migration (makemigrations --check). A SQLite
    database that does not exist yet is never created here: all its
    migrations are unapplied."""
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.loader import MigrationLoader
    state = {'unapplied': [], 'unapplied_count': 0, 'changed_apps': [], 'error': ''}
    try:
        loader = MigrationLoader(None, ignore_no_migrations=True)
        graph = loader.graph
        targets = graph.leaf_nodes()
        db = connections.databases.get(DEFAULT_DB_ALIAS, {})
        name = str(db.get('NAME', ''))
        if 'sqlite3' in str(db.get('ENGINE', '')) and name and name != ':memory:' \
                and not name.startswith('file:') and not os.path.exists(name):
            applied = set()
        else:
            from django.db.migrations.recorder import MigrationRecorder
            applied = set(MigrationRecorder(connections[DEFAULT_DB_ALIAS]).applied_migrations())
        unapplied = []
        for target in targets:
            for node in graph.forwards_plan(target):
                if node not in applied and node not in unapplied:
                    unapplied.append(node)
        state['unapplied_count'] = len(unapplied)
        state['unapplied'] = ['%s.%s' % node for node in unapplied[:3]]
    except Exception as exc:  # an unreachable database is reported, not fatal
        state['error'] = '%s: %s' % (type(exc).__name__, exc)
        return state
    try:
        from django.apps import apps
        from django.db.migrations.autodetector import MigrationAutodetector
        from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
        from django.db.migrations.state import ProjectState
        detector = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps),
                                         NonInteractiveMigrationQuestioner(dry_run=True))
        state['changed_apps'] = sorted(detector.changes(graph=graph))
    except Exception as exc:
        state['error'] = '%s: %s' % (type(exc).__name__, exc)
    return state


def inspect_django():
    from django.conf import settings
    secret = getattr(settings, 'SECRET_KEY', None)
    report = {
        'migrations': migration_state(),
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
        overlay = sys.modules.get(os.environ.get('DJANGO_SETTINGS_MODULE', ''))
        if overlay is not None and hasattr(overlay, 'applied') and os.environ.get('HEARTH_PROJECT_SETTINGS'):
            report['overlay'] = {'module': os.environ['HEARTH_PROJECT_SETTINGS'],
                                 'applied': {k: v for k, v in overlay.applied.items()}}
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
        report = json.dumps(inspect(app)).encode()
        sockets[0].sendall(_pack(len(report), HELLO, 0, 0) + report)
        return
    route_request_errors()
    if kind == 'asgi':
        import asyncio
        asyncio.run(AsgiWorker(app, name, lifespan).run(sockets))
        return
    if mode == 'template':
        hello = str(os.getpid()).encode()
        sockets[0].sendall(_pack(len(hello), HELLO, 0, 0) + hello)
        serve_as_template(app, name, sockets[0])
    else:
        serve_forever(app, name, sockets)


if __name__ == '__main__':
    main()
