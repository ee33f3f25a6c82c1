"""A WSGI worker: each channel serves one request at a time, a thread per
channel (`threads`); the request body is read from frames as the app asks
for it (Input)."""

import os
import signal
import socket
import sys
import threading
import time
import traceback

from .protocol import (ABORT, END, HELLO, MAX_PAYLOAD, REQ_BODY, REQ_HEAD, RESP_BODY, RESP_HEAD, STREAM_FRAME,
                       Channel, HEADER, ChannelLost, ProtocolError, encode_head, frames, send_500)

_pack = HEADER.pack


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


def body_frames(sid, data):
    """The frames of a body's last part: one frame when it fits (Caddy
    answers a whole response at once, with its length), else frames of
    STREAM_FRAME, as the parts before the last go."""
    return frames(RESP_BODY, sid, data, True, MAX_PAYLOAD if len(data) <= MAX_PAYLOAD else STREAM_FRAME)


def declared_length(headers):
    """The Content-Length the app declared, or -1 (none, or not a number)."""
    if headers:
        for name, value in headers:
            if len(name) == 14 and name.lower() == 'content-length':
                # digits only, as Caddy takes it (int() also reads "1_0" and " +5 ")
                if isinstance(value, str) and value.isascii() and value.isdigit():
                    return int(value)
                return -1
    return -1


class WsgiWorker:
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
        state = [None, None, False, 0]  # status, headers, head sent, body bytes write() sent

        def send_head(rest):
            # the head goes with the first body frame; the response counts
            # as begun only once both are sent (a body the app got wrong, a
            # str, raises before anything is: the request gets a 500)
            head = encode_head(state[0], state[1])
            send(_pack(len(head), RESP_HEAD, 0, sid) + head + rest)
            state[2] = True

        def write(data):
            if state[0] is None:
                raise AssertionError('write() called before start_response()')
            state[3] += len(data)
            if not state[2]:
                send_head(frames(RESP_BODY, sid, data, False, STREAM_FRAME))
            elif data:
                send(frames(RESP_BODY, sid, data, False, STREAM_FRAME))

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
                expected = declared_length(state[1])
                if expected >= 0 and state[3] + len(data) > expected:
                    # not past the declared length, as from an iterable
                    # (PEP 3333; what Gunicorn does): Caddy sends no body
                    # that disagrees with its length
                    data = data[:max(expected - state[3], 0)]
                if state[2]:
                    send(body_frames(sid, data))
                else:
                    send_head(body_frames(sid, data))
            else:
                expected = None
                for chunk in result:
                    if not chunk:
                        continue
                    if expected is None:
                        expected = declared_length(state[1])
                    sent = state[3]  # (what write() sent counts too)
                    if sent + len(chunk) >= expected >= 0:
                        # the declared length is complete: this chunk ends
                        # the body (one frame for the usual one-chunk body)
                        last = body_frames(sid, chunk[:max(expected - sent, 0)])
                        if state[2]:
                            send(last)
                        else:
                            send_head(last)
                        break
                    write(chunk)
                else:
                    if state[0] is None:
                        raise AssertionError('the app returned without calling start_response()')
                    end = _pack(0, RESP_BODY, END, sid)
                    if state[2]:
                        send(end)
                    else:
                        send_head(end)
        except (ProtocolError, ChannelLost):
            raise
        except BaseException as exc:
            self.report_error(environ, exc)
            if state[2]:
                message = ('%s: %s' % (type(exc).__name__, exc)).encode('utf-8', 'replace')[:4096]
                send(_pack(len(message), ABORT, 0, sid) + message)
            else:
                send_500(send, sid)
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
    worker = WsgiWorker(app, name, len(channels))
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
