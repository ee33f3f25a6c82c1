"""Tests of the embedded worker runtime (modules/python/engine/runtime: hearth_worker.py
and its hearth_runtime package),
run as a real process speaking the framed protocol over a socketpair:
well-formed exchanges, then malformed and random frames, which must end in a
logged protocol error and a clean exit (Caddy replaces the worker), never a
hang or a response to garbage."""

import hashlib
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIME = os.path.join(HERE, '..', '..', 'modules', 'python', 'engine', 'runtime', 'hearth_worker.py')
sys.path.insert(0, os.path.dirname(RUNTIME))
from hearth_runtime import asgi, protocol, wsgi  # noqa: E402

# the wire constants are the runtime's own (TestWireConstantsAgree checks
# them against Go's)
HEADER = protocol.HEADER
HELLO, FATAL, REQ_HEAD, REQ_BODY = protocol.HELLO, protocol.FATAL, protocol.REQ_HEAD, protocol.REQ_BODY
RESP_HEAD, RESP_BODY, ABORT = protocol.RESP_HEAD, protocol.RESP_BODY, protocol.ABORT
END = protocol.END


def frame(kind, flags, sid, payload=b''):
    return HEADER.pack(len(payload), kind, flags, sid) + payload


def head(**environ):
    pairs = []
    for k, v in environ.items():
        pairs += [k.replace('__', '.'), v]
    return ('\0'.join(pairs) + '\0').encode('latin-1')


class Worker:
    """The runtime started as Caddy starts it, with an app from source."""

    def __init__(self, app_source, kind='wsgi'):
        self.dir = tempfile.TemporaryDirectory()
        with open(os.path.join(self.dir.name, 'testapp.py'), 'w') as f:
            f.write(textwrap.dedent(app_source))
        ours, theirs = socket.socketpair()
        env = dict(os.environ, HEARTH_APP='testapp:application', HEARTH_FDS=str(theirs.fileno()),
                   HEARTH_DIR=self.dir.name, PYTHONUNBUFFERED='1', HEARTH_KIND=kind, HEARTH_LIFESPAN='auto')
        self.proc = subprocess.Popen([sys.executable, RUNTIME], env=env, pass_fds=[theirs.fileno()],
                                     stderr=subprocess.PIPE, cwd=self.dir.name)
        theirs.close()
        self.sock = ours
        self.sock.settimeout(10)
        self.rfile = ours.makefile('rb')

    def read_frame(self):
        h = self.rfile.read(HEADER.size)
        if len(h) < HEADER.size:
            return None
        size, kind, flags, sid = HEADER.unpack(h)
        return kind, flags, sid, self.rfile.read(size)

    def request(self, sid, environ, body=b''):
        data = frame(REQ_HEAD, 0 if body else END, sid, head(**environ))
        if body:
            data += frame(REQ_BODY, END, sid, body)
        self.sock.sendall(data)
        status = self.read_frame()
        chunks = []
        while True:
            kind, flags, rsid, payload = self.read_frame()
            assert rsid == sid, (rsid, sid)
            if kind == ABORT:
                return status, b''.join(chunks), 'aborted'
            chunks.append(payload)
            if flags & END:
                return status, b''.join(chunks), None

    def finish(self):
        self.rfile.close()
        self.sock.close()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError('worker did not exit after its channel closed')
        self.dir.cleanup()
        return self.proc.returncode, err.decode()


BASE = dict(REQUEST_METHOD='GET', PATH_INFO='/', QUERY_STRING='', SERVER_NAME='localhost',
            SERVER_PORT='80', SERVER_PROTOCOL='HTTP/1.1', wsgi__url_scheme='http')

ECHO = '''
def application(environ, start_response):
    body = environ['wsgi.input'].read()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('X-Path', environ['PATH_INFO'])])
    return [b'got:', body]
'''


class ExchangeTest(unittest.TestCase):
    def test_hello_request_response(self):
        w = Worker(ECHO)
        kind, _, _, pid = w.read_frame()
        self.assertEqual(kind, HELLO)
        self.assertEqual(int(pid), w.proc.pid)
        (kind, _, sid, status), body, err = w.request(5, dict(BASE, PATH_INFO='/x', CONTENT_LENGTH='3'), b'abc')
        self.assertEqual((kind, sid, err), (RESP_HEAD, 5, None))
        self.assertEqual(status.split(b'\0'), [b'200 OK', b'Content-Type', b'text/plain', b'X-Path', b'/x'])
        self.assertEqual(body, b'got:abc')
        # the app ignoring its body leaves no bytes behind for the next request
        code, _ = w.finish()
        self.assertEqual(code, 0)

    def test_unread_body_is_drained(self):
        w = Worker('''
def application(environ, start_response):
    start_response('204 No Content', [])
    return []
''')
        w.read_frame()
        for sid in (1, 2, 3):
            (kind, _, rsid, status), body, _ = w.request(sid, dict(BASE, CONTENT_LENGTH='5'), b'12345')
            self.assertEqual((kind, rsid, status), (RESP_HEAD, sid, b'204 No Content'))
        self.assertEqual(w.finish()[0], 0)

    def test_body_frames_are_small(self):
        """A WSGI body goes to Caddy in frames of at most 64 KiB, however the
        app hands it over: Caddy holds one frame of a stalled response past
        its budget for slow clients (1 MiB frames held a megabyte each). A
        whole body that fits a frame goes in one (Caddy answers it at once,
        with its length)."""
        w = Worker('''
def application(environ, start_response):
    big = b'x' * (3 << 20)
    path = environ['PATH_INFO']
    if path == '/write':
        write = start_response('200 OK', [])
        write(big)
        return []
    if path == '/length':
        start_response('200 OK', [('Content-Length', str(len(big)))])
        return iter([big])
    start_response('200 OK', [])
    if path == '/whole':
        return [b'y' * (512 << 10)]
    return [big] if path == '/list' else iter([big, big])
''')
        w.read_frame()
        for sid, (path, size) in enumerate([('/write', 3 << 20), ('/length', 3 << 20), ('/list', 3 << 20),
                                            ('/chunks', 6 << 20)], 1):
            w.sock.sendall(frame(REQ_HEAD, END, sid, head(**dict(BASE, PATH_INFO=path))))
            kind, _, _, _ = w.read_frame()
            self.assertEqual(kind, RESP_HEAD)
            total = 0
            while True:
                kind, flags, rsid, payload = w.read_frame()
                self.assertEqual((kind, rsid), (RESP_BODY, sid))
                self.assertLessEqual(len(payload), 64 << 10, path)
                total += len(payload)
                if flags & END:
                    break
            self.assertEqual(total, size, path)
        w.sock.sendall(frame(REQ_HEAD, END, 9, head(**dict(BASE, PATH_INFO='/whole'))))
        self.assertEqual(w.read_frame()[0], RESP_HEAD)
        kind, flags, _, payload = w.read_frame()
        self.assertEqual((kind, flags & END, len(payload)), (RESP_BODY, END, 512 << 10))
        self.assertEqual(w.finish()[0], 0)

    def test_declared_length_ends_the_body_in_its_last_chunk(self):
        # an iterable that is not a list (Django's HttpResponse, generators)
        # whose Content-Length is reached: the chunk reaching it is the last
        # frame, so a one-chunk body travels as head + one END frame, and
        # bytes beyond the declared length are not sent
        w = Worker('''
class OneChunk:
    def __init__(self, body):
        self.body = body
    def __iter__(self):
        return iter([self.body])

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/one':
        start_response('200 OK', [('Content-Length', '5')])
        return OneChunk(b'hello')
    if path == '/two':
        start_response('200 OK', [('content-length', '6')])
        return (c for c in [b'abc', b'', b'def'])
    if path == '/over':
        start_response('200 OK', [('Content-Length', '4')])
        return (c for c in [b'ab', b'cdef', b'never'])
    if path == '/written':
        write = start_response('200 OK', [('Content-Length', '4')])
        write(b'abc')
        return (c for c in [b'de', b'never'])
    if path == '/list':
        start_response('200 OK', [('Content-Length', '4')])
        return [b'ab', b'cdef']
    start_response('200 OK', [])
    return (c for c in [b'no', b'length'])
''')
        w.read_frame()

        def frames_of(sid, path):
            w.sock.sendall(frame(REQ_HEAD, END, sid, head(**dict(BASE, PATH_INFO=path))))
            got = [w.read_frame()]
            while not got[-1][1] & END:
                got.append(w.read_frame())
            return [(kind, flags, payload) for kind, flags, _, payload in got]

        self.assertEqual(frames_of(1, '/one'), [(RESP_HEAD, 0, b'200 OK\0Content-Length\x005'), (RESP_BODY, END, b'hello')])
        self.assertEqual(frames_of(2, '/two')[1:], [(RESP_BODY, 0, b'abc'), (RESP_BODY, END, b'def')])
        self.assertEqual(frames_of(3, '/over')[1:], [(RESP_BODY, 0, b'ab'), (RESP_BODY, END, b'cd')])
        self.assertEqual(frames_of(4, '/none')[1:], [(RESP_BODY, 0, b'no'), (RESP_BODY, 0, b'length'), (RESP_BODY, END, b'')])
        # what write() sent counts toward the length; a list is cut at it too
        self.assertEqual(frames_of(5, '/written')[1:], [(RESP_BODY, 0, b'abc'), (RESP_BODY, END, b'd')])
        self.assertEqual(frames_of(6, '/list')[1:], [(RESP_BODY, END, b'abcd')])
        self.assertEqual(w.finish()[0], 0)

    def test_pipelined_requests_are_answered_in_order(self):
        # Caddy may write a request behind the one running (pipelining):
        # the worker answers them one after the other
        w = Worker(ECHO)
        w.read_frame()
        w.sock.sendall(b''.join(frame(REQ_HEAD, END, sid, head(**dict(BASE, PATH_INFO='/%d' % sid)))
                                for sid in (7, 8, 9)))
        for sid in (7, 8, 9):
            kind, _, rsid, status = w.read_frame()
            self.assertEqual((kind, rsid), (RESP_HEAD, sid))
            self.assertIn(('/%d' % sid).encode(), status)
            kind, flags, rsid, body = w.read_frame()
            self.assertEqual((kind, flags & END, rsid, body), (RESP_BODY, END, sid, b'got:'))
        self.assertEqual(w.finish()[0], 0)

    def test_import_error_sends_fatal(self):
        w = Worker('raise ImportError("no module named nothere")\n')
        kind, _, _, payload = w.read_frame()
        self.assertEqual(kind, FATAL)
        self.assertIn(b'Traceback', payload)
        self.assertIn(b'no module named nothere', payload)
        code, _ = w.finish()
        self.assertEqual(code, 1)


class GarbageTest(unittest.TestCase):
    """Malformed frames: a logged protocol error and an exit, never a reply."""

    def expect_protocol_error(self, data):
        w = Worker(ECHO)
        self.assertEqual(w.read_frame()[0], HELLO)
        w.sock.sendall(data)
        w.sock.shutdown(socket.SHUT_WR)
        self.assertIsNone(w.read_frame(), 'the worker answered garbage')
        code, err = w.finish()
        self.assertEqual(code, 3, err)
        self.assertIn('protocol error from Caddy', err)

    def test_unknown_frame_type(self):
        self.expect_protocol_error(frame(42, 0, 1, b'x'))

    def test_body_before_head(self):
        self.expect_protocol_error(frame(REQ_BODY, END, 1, b'x'))

    def test_oversized_frame(self):
        self.expect_protocol_error(HEADER.pack(protocol.MAX_PAYLOAD + 1, REQ_HEAD, 0, 1))

    def test_truncated_header(self):
        self.expect_protocol_error(b'\x00\x00\x00')

    def test_truncated_body(self):
        self.expect_protocol_error(frame(REQ_HEAD, 0, 1, head(**BASE)) + HEADER.pack(10, REQ_BODY, END, 1) + b'abc')

    def test_random_garbage(self):
        rng = random.Random(2929)
        for _ in range(25):
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            if data[4:5] == bytes([REQ_HEAD]):
                continue  # might be a valid request head
            with self.subTest(data=data.hex()):
                self.expect_protocol_error(data)


ASGI_ECHO = '''
async def application(scope, receive, send):
    if scope['type'] != 'http':
        return
    body = b''
    while True:
        message = await receive()
        body += message.get('body', b'')
        if not message.get('more_body'):
            break
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
    await send({'type': 'http.response.body', 'body': b'got:' + body})
'''


class AsgiRuntimeTest(unittest.TestCase):
    def test_exchange(self):
        w = Worker(ASGI_ECHO, kind='asgi')
        self.assertEqual(w.read_frame()[0], HELLO)
        (kind, _, sid, status), body, err = w.request(9, dict(BASE, PATH_INFO='/x', CONTENT_LENGTH='3'), b'abc')
        self.assertEqual((kind, sid, err), (RESP_HEAD, 9, None))
        self.assertEqual(status.split(b'\0')[:3], [b'200 OK', b'content-type', b'text/plain'])
        self.assertEqual(body, b'got:abc')
        self.assertEqual(w.finish()[0], 0)

    def test_frames_split_across_reads(self):
        """Frames arriving a few bytes at a time, then many in one read."""
        w = Worker(ASGI_ECHO, kind='asgi')
        self.assertEqual(w.read_frame()[0], HELLO)
        data = frame(REQ_HEAD, 0, 3, head(**BASE)) + frame(REQ_BODY, 0, 3, b'ab') + frame(REQ_BODY, END, 3, b'cd')
        for i in range(0, len(data), 5):
            w.sock.sendall(data[i:i + 5])
            time.sleep(0.002)
        kind, _, sid, status = w.read_frame()
        self.assertEqual((kind, sid, status.split(b'\0')[0]), (RESP_HEAD, 3, b'200 OK'))
        self.assertEqual(w.read_frame()[3], b'got:abcd')
        for sid in (4, 5, 6):  # requests one after the other on the channel
            (kind, _, rsid, _), body, err = w.request(sid, BASE, b'n%d' % sid)
            self.assertEqual((kind, rsid, body, err), (RESP_HEAD, sid, b'got:n%d' % sid, None))
        self.assertEqual(w.finish()[0], 0)

    def test_large_body(self):
        """A body of several maximum-size frames, written at once."""
        w = Worker(ASGI_ECHO, kind='asgi')
        self.assertEqual(w.read_frame()[0], HELLO)
        body = bytes(random.Random(7).randrange(256) for _ in range(1 << 16)) * 40  # 2.5 MiB
        size = protocol.MAX_PAYLOAD
        data = frame(REQ_HEAD, 0, 1, head(**BASE))
        for start in range(0, len(body), size):
            data += frame(REQ_BODY, END if start + size >= len(body) else 0, 1, body[start:start + size])
        sender = threading.Thread(target=w.sock.sendall, args=(data,))
        sender.start()
        self.assertEqual(w.read_frame()[0], RESP_HEAD)
        got = b''
        while True:
            kind, flags, _, payload = w.read_frame()
            got += payload
            if flags & END:
                break
        sender.join()
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(b'got:' + body).hexdigest())
        self.assertEqual(w.finish()[0], 0)

    def test_every_receiver_hears_the_disconnect(self):
        """Two tasks of the app waiting in receive() when the client leaves
        (a middleware and a disconnect listener): both get http.disconnect.
        The second waited for good: the cancel went to the first only."""
        w = Worker('''
import asyncio, sys

async def application(scope, receive, send):
    if scope['type'] != 'http':
        return
    await receive()  # the (empty) body

    async def listen():
        while (await receive())['type'] != 'http.disconnect':
            pass
    done, _ = await asyncio.wait([asyncio.ensure_future(listen()) for _ in range(2)], timeout=5)
    sys.stderr.write('receivers told: %d\\n' % len(done))
    await send({'type': 'http.response.start', 'status': 200, 'headers': []})
    await send({'type': 'http.response.body', 'body': b''})
''', kind='asgi')
        self.assertEqual(w.read_frame()[0], HELLO)
        w.sock.sendall(frame(REQ_HEAD, END, 1, head(**BASE)))
        time.sleep(0.3)
        w.sock.sendall(frame(protocol.CANCEL, 0, 1))
        while not w.read_frame()[1] & END:
            pass
        code, err = w.finish()
        self.assertEqual(code, 0, err)
        self.assertIn('receivers told: 2', err)

    def expect_500_then_ok(self, w, sid):
        """Stream sid ends with the runtime's 500; the channel's next
        request (sid + 1) is answered."""
        kind, _, got, status = w.read_frame()
        self.assertEqual((kind, got, status.split(b'\0')[0]), (RESP_HEAD, sid, b'500 Internal Server Error'))
        while not w.read_frame()[1] & END:
            pass
        (kind, _, got, _), body, err = w.request(sid + 1, BASE)
        self.assertEqual((kind, got, body, err), (RESP_HEAD, sid + 1, b'ok', None))

    def test_given_up_request_ends_at_once(self):
        """Caddy gives up on a request (TIMED_OUT cancel) whose app swallows
        the CancelledError and goes on waiting: the runtime ends the stream
        itself at once (a 500 Caddy drops), logs where the app waited, and
        the channel serves the next request. Caddy would otherwise take the
        worker's event loop for blocked and end the worker."""
        w = Worker('''
import asyncio

async def application(scope, receive, send):
    if scope['type'] != 'http':
        return
    if scope['path'] == '/stubborn':
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(30)  # a slow cleanup, or a swallowed cancel
    await send({'type': 'http.response.start', 'status': 200, 'headers': []})
    await send({'type': 'http.response.body', 'body': b'ok'})
''', kind='asgi')
        self.assertEqual(w.read_frame()[0], HELLO)
        w.sock.sendall(frame(REQ_HEAD, END, 1, head(**dict(BASE, PATH_INFO='/stubborn'))))
        time.sleep(0.3)
        w.sock.settimeout(3)  # far less than the app's 30 s
        w.sock.sendall(frame(protocol.CANCEL, protocol.TIMED_OUT, 1))
        self.expect_500_then_ok(w, 1)
        # the head and Caddy's cancel read together (the loop held up past
        # the timeout): the handler never runs, the stream still ends
        w.sock.sendall(frame(REQ_HEAD, END, 3, head(**dict(BASE, PATH_INFO='/stubborn'))) +
                       frame(protocol.CANCEL, protocol.TIMED_OUT, 3))
        self.expect_500_then_ok(w, 3)
        w.proc.kill()  # (its stubborn task would hold a graceful stop for 30 s)
        code, err = w.finish()
        self.assertIn('Caddy gave up on a request', err)
        self.assertIn('await asyncio.sleep(30)', err)

    def test_websocket_ends_however_its_task_ends(self):
        """A WebSocket app that fails after accepting (accepting twice
        among other things), or whose task is cancelled (a CancelledError is
        no Exception), ends its stream with a close 1011 (internal error):
        the channel then serves the next request. A cancelled one never ended its stream, and its channel
        was lost for good."""
        w = Worker('''
import asyncio

async def application(scope, receive, send):
    if scope['type'] == 'http':
        await send({'type': 'http.response.start', 'status': 200, 'headers': []})
        await send({'type': 'http.response.body', 'body': b'ok'})
        return
    await receive()  # connect
    await send({'type': 'websocket.accept'})
    if scope['path'] == '/cancelled':
        raise asyncio.CancelledError()
    if scope['path'] == '/twice':
        await send({'type': 'websocket.accept'})  # (a second WS_ACCEPT made Caddy end the worker)
    raise ValueError('the app failed')
''', kind='asgi')
        self.assertEqual(w.read_frame()[0], HELLO)
        w.sock.settimeout(5)
        for sid, path in ((1, '/cancelled'), (3, '/failed'), (5, '/twice')):
            with self.subTest(path=path):
                w.sock.sendall(frame(REQ_HEAD, END, sid, head(**dict(BASE, PATH_INFO=path, hearth__websocket='1'))))
                got = []
                while True:
                    kind, flags, rsid, payload = w.read_frame()
                    self.assertEqual(rsid, sid)
                    got.append((kind, payload[:2]))
                    if kind == RESP_BODY and flags & END:
                        break
                self.assertEqual(got, [(protocol.WS_ACCEPT, b''), (protocol.WS_CLOSE, struct.pack('!H', 1011)), (RESP_BODY, b'')])
                (kind, _, rsid, _), body, err = w.request(sid + 1, BASE)
                self.assertEqual((kind, rsid, body, err), (RESP_HEAD, sid + 1, b'ok', None))
        code, err = w.finish()
        self.assertEqual(code, 0, err)
        self.assertIn('CancelledError', err)
        self.assertIn('the app failed', err)
        self.assertIn('websocket.accept sent twice', err)

    def test_body_without_a_file_is_bounded(self):
        """A request body past the memory bound whose temporary file cannot
        be written (a full disk): it stayed in memory whole, so that
        max_concurrency uploads could hold max_concurrency x max_body. The
        request now gets a 500 (the log says why), the body's rest is read
        and dropped, and the channel serves the next request."""
        w = Worker('''
import asyncio, errno, tempfile

def no_room(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')
tempfile.TemporaryFile = no_room

async def application(scope, receive, send):
    if scope['type'] != 'http':
        return
    await asyncio.sleep(0.5)  # the body comes in meanwhile
    size = 0
    while True:
        message = await receive()
        size += len(message.get('body', b''))
        if not message.get('more_body'):
            break
    await send({'type': 'http.response.start', 'status': 200, 'headers': []})
    await send({'type': 'http.response.body', 'body': b'%d' % size})
''', kind='asgi')
        self.assertEqual(w.read_frame()[0], HELLO)
        w.sock.settimeout(10)
        chunk, n = b'x' * protocol.MAX_PAYLOAD, 12  # 12 MiB, three times a request's memory
        data = frame(REQ_HEAD, 0, 1, head(**dict(BASE, REQUEST_METHOD='POST', CONTENT_LENGTH=str(n * len(chunk)))))
        data += b''.join(frame(REQ_BODY, END if i == n - 1 else 0, 1, chunk) for i in range(n))
        sender = threading.Thread(target=w.sock.sendall, args=(data,))
        sender.start()
        kind, _, got, status = w.read_frame()
        self.assertEqual((kind, got, status.split(b'\0')[0]), (RESP_HEAD, 1, b'500 Internal Server Error'))
        while not w.read_frame()[1] & END:
            pass
        sender.join()  # (the body's rest was read, and dropped)
        (kind, _, got, _), body, err = w.request(2, BASE)
        self.assertEqual((kind, got, body, err), (RESP_HEAD, 2, b'0', None))
        code, err = w.finish()
        self.assertEqual(code, 0, err)
        self.assertIn('cannot keep a request\'s body', err)
        self.assertIn('No space left on device', err)

    def test_garbage(self):
        for data in (frame(42, 0, 1, b'x'), frame(REQ_BODY, END, 1, b'x'), b'\x00\x00\x00',
                     HEADER.pack(protocol.MAX_PAYLOAD + 1, REQ_HEAD, 0, 1),
                     frame(REQ_HEAD, 0, 1, head(**BASE)) + HEADER.pack(10, REQ_BODY, END, 1) + b'abc'):
            with self.subTest(data=data.hex()):
                w = Worker(ASGI_ECHO, kind='asgi')
                self.assertEqual(w.read_frame()[0], HELLO)
                w.sock.sendall(data)
                w.sock.shutdown(socket.SHUT_WR)
                self.assertIsNone(w.read_frame())
                code, err = w.finish()
                self.assertEqual(code, 3, err)
                self.assertIn('protocol error from Caddy', err)


class AsgiChannelReadsTest(unittest.TestCase):
    """The ASGI channel's own read buffer (a BufferedProtocol), fed the way
    asyncio feeds it: whatever the reads' sizes, the same frames come out,
    in order, and the buffer returns to its normal size."""

    @staticmethod
    def routed(data, cuts):
        import asyncio

        async def run():
            got = []

            class Recording(asgi.asgi_channel_class()):
                def route(self, kind, flags, sid, payload):
                    got.append((kind, flags, sid, payload))

            ch = Recording(worker=None)
            pos = 0
            for size in cuts + [len(data)]:
                piece = data[pos:pos + size]
                pos += len(piece)
                while piece:
                    buf = ch.get_buffer(-1)
                    assert len(buf) > 0, 'get_buffer returned an empty buffer'
                    n = min(len(buf), len(piece))
                    buf[:n] = piece[:n]
                    del buf
                    ch.buffer_updated(n)
                    piece = piece[n:]
            return got, len(ch.buffer), ch.end - ch.start
        return asyncio.run(run())

    def test_any_split_gives_the_same_frames(self):
        rnd = random.Random(20)
        sizes = [0, 1, 9, 100, 4000, 70000, 200000, protocol.MAX_PAYLOAD]
        for trial in range(40):
            want, data = [], b''
            for i in range(rnd.randrange(1, 8)):
                payload = rnd.randbytes(rnd.choice(sizes))
                kind = REQ_HEAD if i == 0 else REQ_BODY
                want.append((kind, 0, trial, payload))
                data += frame(kind, 0, trial, payload)
            cuts = []
            while sum(cuts) < len(data):
                cuts.append(rnd.choice([1, 3, HEADER.size, 777, 65536, 300000, len(data)]))
            with self.subTest(trial=trial, sizes=[len(w[3]) for w in want]):
                got, buffer_size, left = self.routed(data, cuts)
                self.assertEqual(len(got), len(want))
                for g, w in zip(got, want):
                    self.assertEqual(g[:3], w[:3])
                    self.assertEqual(type(g[3]), bytes)
                    self.assertEqual(hashlib.sha256(g[3]).digest(), hashlib.sha256(w[3]).digest())
                self.assertEqual(left, 0)
                self.assertEqual(buffer_size, asgi.READ_BUFFER)

    def test_partial_frame_waits(self):
        data = frame(REQ_HEAD, 0, 1, b'x' * 100)
        got, _, left = self.routed(data[:50], [])
        self.assertEqual((got, left), ([], 50))


class WorkerMemoryTest(unittest.TestCase):
    """What the requests of one ASGI worker hold for their apps, together:
    random WebSockets and uploads whose apps receive when told, driven
    in-process (a worker, its channels, a transport that records). The
    worker's sum stays the requests' own, never passes WORKER_MEMORY by more
    than one message, bodies go to their files past half of it, the
    WebSocket closed for room is the one furthest behind, and every body
    reaches its app whole, however it was split between memory and file,
    in messages no larger than SPILL_CHUNK or the chunk Caddy sent."""

    LIMITS = dict(WORKER_MEMORY=600 << 10, QUEUE_MEMORY=768 << 10, WS_BACKLOG=64 << 20, SPILL_CHUNK=40 << 10)

    def setUp(self):
        saved = {name: getattr(asgi, name) for name in self.LIMITS}
        for name, value in self.LIMITS.items():
            setattr(asgi, name, value)
        self.addCleanup(lambda: [setattr(asgi, name, value) for name, value in saved.items()])

    def test_random_floods(self):
        import asyncio
        import contextlib
        import io
        log, self.ended = io.StringIO(), 0
        for seed in range(30):
            with self.subTest(seed=seed), contextlib.redirect_stderr(log):
                asyncio.run(self.flood(random.Random(seed)))
        self.assertIn('this WebSocket\'s app had', log.getvalue())  # (the floods did close some)
        self.assertGreater(self.ended, 5)  # (and bodies were compared)

    async def flood(self, rnd):
        import asyncio
        gates, bodies, told, largest = {}, {}, {}, [0]

        async def app(scope, receive, send):
            path = scope['path']
            if scope['type'] == 'websocket':
                await receive()
                await send({'type': 'websocket.accept'})
                while True:
                    for _ in range(await gates[path].get()):
                        message = await receive()
                        if message['type'] == 'websocket.disconnect':
                            told[path] = message['code']
                            return
                return
            await gates[path].get()
            body = []
            if int(path[1:]) % 3 == 0:  # answers without reading its body, and goes on (a background task)
                await send({'type': 'http.response.start', 'status': 200, 'headers': []})
                await send({'type': 'http.response.body', 'body': b''})
                await gates[path].get()
                return
            while True:
                message = await receive()
                body.append(message.get('body', b''))
                largest[0] = max(largest[0], len(body[-1]))
                if not message.get('more_body'):
                    break
            bodies[path] = b''.join(body)
            await send({'type': 'http.response.start', 'status': 200, 'headers': []})
            await send({'type': 'http.response.body', 'body': b''})

        class Transport:
            def __init__(self):
                self.closes = []

            def write(self, data):
                offset = 0
                while offset < len(data):
                    size, kind, _, _ = HEADER.unpack_from(data, offset)
                    payload = data[offset + HEADER.size:offset + HEADER.size + size]
                    if kind == protocol.WS_CLOSE:
                        self.closes.append(struct.unpack('!H', payload[:2])[0])
                    offset += HEADER.size + size

        worker = asgi.AsgiWorker(app, 'test', 'off')
        channel_class = asgi.asgi_channel_class()
        worker.channels = [channel_class(worker) for _ in range(8)]
        for channel in worker.channels:
            channel.connection_made(Transport())
        sent = {}  # path: the body sent so far, for an upload
        open_ws, uploads, sid = {}, {}, 0  # path: its channel
        limit = asgi.WORKER_MEMORY
        for step in range(400):
            free = [c for c in worker.channels if c.request is None or c.request[2].done()]
            op = rnd.random()
            before = {path: c.request[1].held for path, c in open_ws.items()}
            target = None
            if free and op < 0.1:
                sid += 1
                path = '/%d' % sid
                gates[path] = asyncio.Queue()
                if rnd.random() < 0.6:
                    environ = dict(BASE, PATH_INFO=path, hearth__websocket='1')
                    free[0].route(REQ_HEAD, 0, sid, head(**environ))
                    open_ws[path] = free[0]
                else:
                    free[0].route(REQ_HEAD, 0, sid, head(**dict(BASE, PATH_INFO=path)))
                    uploads[path], sent[path] = free[0], b''
            elif open_ws and op < 0.6:
                target = rnd.choice(sorted(open_ws))
                c = open_ws[target]
                message = rnd.randbytes(rnd.choice([0, 10, 3000, 60000, 200000]))
                before[target] += len(message) + asgi.ITEM_COST  # (the message counts for its own WebSocket)
                c.route(protocol.WS_MSG, protocol.BINARY, c.request[0], message)
            elif uploads and op < 0.85:
                path = rnd.choice(sorted(uploads))
                chunk = rnd.randbytes(rnd.choice([1, 1, 500, 20000, 100000]))
                last = rnd.random() < 0.05
                c = uploads[path]
                c.route(REQ_BODY, END if last else 0, c.request[0], chunk)
                sent[path] += chunk
                if int(path[1:]) % 3 == 0 and rnd.random() < 0.05:
                    gates[path].put_nowait(1)  # its app answers before the body's end
                if last:
                    del uploads[path]
                    gates[path].put_nowait(1)
            elif gates:
                gates[rnd.choice(sorted(gates))].put_nowait(rnd.choice([1, 5, 50]))
            for _ in range(4):
                await asyncio.sleep(0)
            queues = [c.request[1] for c in worker.channels if c.request is not None]
            self.assertEqual(worker.held, sum(q.held for q in queues), 'step %d' % step)
            self.assertEqual([q.held for q in queues if q.finished and q.held], [], 'step %d: finished, still held' % step)
            self.assertEqual([q.held for q in queues if q.state and q.state['ended'] and q.held], [],
                             'step %d: answered, still held' % step)
            self.assertLessEqual(worker.held, limit + 200000 + asgi.ITEM_COST, 'step %d' % step)
            in_memory = sum(len(i[2]) for q in queues if not q.websocket and q.items
                            for i in q.items if i is not None and type(i[2]) is bytes)
            self.assertLessEqual(in_memory, limit // 2 + 100000, 'step %d: bodies in memory' % step)
            for path, c in list(open_ws.items()):
                if c.request[1].close_sent:
                    del open_ws[path]
                    if path not in before:
                        continue
                    self.assertEqual(c.transport.closes[-1:], [asgi.WS_TOO_SLOW])
                    furthest = max(before.values())
                    self.assertEqual(before[path], furthest,
                                     'step %d: closed %s (%d behind) while another was %d behind' % (step, path, before[path], furthest))
        for path, c in uploads.items():
            c.route(REQ_BODY, END, c.request[0], b'')
        for path in sent:
            gates[path].put_nowait(1)
        for _ in range(20):
            await asyncio.sleep(0)
        for path, body in bodies.items():
            self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(sent[path]).hexdigest(), path)
        self.assertLessEqual(largest[0], 100000, 'a body message larger than any chunk sent')
        self.ended += len(bodies)
        tasks = [c.request[2] for c in worker.channels if c.request is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.assertEqual(worker.held, 0)


class InputTest(unittest.TestCase):
    """wsgi.input semantics over body frames split at awkward places."""

    def make(self, *chunks):
        a, b = socket.socketpair()
        data = b''.join(frame(REQ_BODY, END if i == len(chunks) - 1 else 0, 1, c) for i, c in enumerate(chunks))
        a.sendall(data)
        a.close()
        self.addCleanup(b.close)
        return wsgi.Input(protocol.Channel(b), False)

    def test_read_sizes(self):
        i = self.make(b'hel', b'lo wor', b'ld')
        self.assertEqual(i.read(2), b'he')
        self.assertEqual(i.read(5), b'llo w')
        self.assertEqual(i.read(), b'orld')
        self.assertEqual(i.read(), b'')
        self.assertEqual(i.read(3), b'')

    def test_readline_and_iteration(self):
        i = self.make(b'one\ntw', b'o\nthree\n', b'four')
        self.assertEqual(i.readline(), b'one\n')
        self.assertEqual(i.readline(2), b'tw')
        self.assertEqual(list(i), [b'o\n', b'three\n', b'four'])

    def test_readlines_hint(self):
        i = self.make(b'a\nb\nc\n')
        self.assertEqual(i.readlines(2), [b'a\n', b'b\n'])
        self.assertEqual(i.readlines(), [b'c\n'])


if __name__ == '__main__':
    unittest.main()


class TrackedSecretTest(unittest.TestCase):
    """The key check (HG-KEY-05) runs git as the app's account: in a
    repository another account owns (the deploy user's), git refused it as
    "dubious ownership", and a key written in a tracked file went
    unreported; the program the repository's config names (core.fsmonitor)
    never runs."""

    @unittest.skipUnless(os.geteuid() == 0, 'needs root to run as another account')
    def test_repository_of_another_account(self):
        secret = 'k3y-' + hashlib.sha256(os.urandom(8)).hexdigest()
        with tempfile.TemporaryDirectory() as top:
            repo = os.path.join(top, 'repo')
            os.mkdir(repo)
            os.chmod(top, 0o755)
            marker = os.path.join(top, 'monitor-ran')
            monitor = os.path.join(top, 'monitor.sh')
            with open(monitor, 'w') as f:
                f.write('#!/bin/sh\ntouch %s\n' % marker)
            os.chmod(monitor, 0o755)
            with open(os.path.join(repo, 'settings.py'), 'w') as f:
                f.write('SECRET_KEY = %r\n' % secret)
            os.chmod(os.path.join(repo, 'settings.py'), 0o644)
            for args in (['init', '-q'], ['add', 'settings.py'], ['config', 'core.fsmonitor', monitor]):
                subprocess.run(['git'] + args, cwd=repo, check=True, capture_output=True)
            for dirpath, dirnames, filenames in os.walk(repo):
                for name in dirnames + filenames:
                    os.chmod(os.path.join(dirpath, name), 0o755 if name in dirnames else 0o644)
            code = ('import sys; sys.path.insert(0, %r)\n'
                    'from hearth_runtime import inspection\n'
                    'print(inspection.tracked_files_containing(%r))\n') % (os.path.dirname(RUNTIME), secret)
            out = subprocess.run([sys.executable, '-I', '-c', code], cwd=repo, capture_output=True, text=True, timeout=60,
                                 user=65534, group=65534, extra_groups=[], env={'PATH': '/usr/bin:/bin', 'HOME': '/nonexistent'})
            self.assertEqual(out.stdout.strip(), "['settings.py']", out.stderr)
            self.assertFalse(os.path.exists(marker), "the repository's core.fsmonitor ran")


class CopiesOfTest(unittest.TestCase):
    """HG-KEY-06's search for copies of settings.py's own key in other
    settings: nested values, strings that contain it, short keys whole."""

    def test_copies(self):
        from hearth_runtime import inspection

        class Settings:
            SECRET_KEY = 'the overlay key'
            SIMPLE_JWT = {'ALGORITHM': 'HS256', 'SIGNING_KEY': 'django-insecure-abcdefgh'}
            SECRET_KEY_FALLBACKS = ['django-insecure-abcdefgh']
            DERIVED = ('prefix-django-insecure-abcdefgh',)
            OTHER = {'a': [1, 2, {'b': 'nothing here'}]}
            lower = 'django-insecure-abcdefgh'  # not a setting
        self.assertEqual(inspection.copies_of('django-insecure-abcdefgh', Settings),
                         ['DERIVED', 'SECRET_KEY_FALLBACKS', 'SIMPLE_JWT'])

        class Short:
            SECRET_KEY = 'x'
            JWT = {'SIGNING_KEY': 'abc'}
            TEXT = 'labcdef'
        self.assertEqual(inspection.copies_of('abc', Short), ['JWT'])
