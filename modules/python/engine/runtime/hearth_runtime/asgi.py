"""An ASGI worker: one asyncio loop, a channel per concurrent request
(`max_concurrency`), lifespan, HTTP and WebSocket scopes. asyncio is
imported only here, so WSGI workers never load it."""

import collections
import os
import signal
import struct
import sys
import traceback

from .protocol import (ABORT, BINARY, CANCEL, END, FATAL, HEADER, HEADER_SIZE, HELLO, MAX_PAYLOAD, REQ_BODY,
                       REFUSED, REQ_HEAD, RESP_BODY, RESP_HEAD, STREAM_FRAME, TIMED_OUT, WS_ACCEPT, WS_CLOSE,
                       WS_MSG, ChannelLost, ClientDisconnected, ProtocolError, encode_head, frames, send_500)

_pack = HEADER.pack
READ_BUFFER = 64 * 1024  # an ASGI channel's read buffer; it grows for a larger frame, then shrinks back
# What a request holds of what Caddy sent and its app has not received yet,
# read from the channel however far behind the app is (so that a cancel or
# a close always comes through): of a request body, up to QUEUE_MEMORY
# bytes in memory and the rest (bounded by max_body) in a temporary file of
# the request's, unlinked; of a WebSocket's messages, up to WS_BACKLOG
# bytes in memory, past which the WebSocket is closed with 1009.
QUEUE_MEMORY = 4 << 20
WS_BACKLOG = 16 << 20
# What all the requests of a worker hold together in memory (max_concurrency
# of them share it): request bodies go to their files once the worker holds
# half of it, and past all of it the WebSocket whose app is furthest behind
# is closed with 1009 (what its app had not received is dropped).
WORKER_MEMORY = 64 << 20
# A request body's chunks in its file are handed to the app up to this many
# bytes at a time (a client that trickles its body a byte per packet makes
# one queue item per SPILL_CHUNK, not one per byte)
SPILL_CHUNK = 1 << 20
# what a queued item costs beyond its payload (the tuple, the bytes object,
# the queue's slot): a flood of empty messages or tiny chunks counts too
ITEM_COST = 128
WS_TOO_SLOW = 1009
# how long requests whose channel Caddy closed have to end once the worker
# is told to stop (SIGTERM) before their tasks are cancelled: less than
# the 10 s Caddy gives a stopping worker before SIGKILL
LOST_GRACE = 3
# why a stream Caddy refused (CANCEL with REFUSED) was cancelled, as logged
REFUSED_WHY = ("Caddy refused a streamed response: the app already had as many streams and WebSockets "
               "under way as it may (max_streams, max_websockets); its client got 503")
# How long a response head waits for the app's first body message before
# it goes out alone (seconds): a head and its body sent a few event-loop
# turns apart (Starlette's BaseHTTPMiddleware, a quick query) still go out
# together, in one write and one frame read by Caddy; the head of an event
# stream waiting for its first event reaches the client at once.
HEAD_HOLD = 0.01


def awaiting(coro, limit=100):
    """Where a suspended coroutine waits, as traceback lines, outermost
    first: its frame, then those of what it awaits, down the chain (a
    task's own stack shows only its outermost frame)."""
    import linecache
    lines = []
    def first(obj, names):
        for name in names:
            value = getattr(obj, name, None)
            if value is not None:
                return value
        return None

    while coro is not None and len(lines) < limit:
        frame = first(coro, ('cr_frame', 'gi_frame', 'ag_frame'))
        if frame is None:
            break
        code = frame.f_code
        lines.append('  File "%s", line %s, in %s\n' % (code.co_filename, frame.f_lineno, code.co_name))
        source = linecache.getline(code.co_filename, frame.f_lineno or 0).strip()
        if source:
            lines.append('    %s\n' % source)
        coro = first(coro, ('cr_await', 'gi_yieldfrom', 'ag_await'))
    return lines


def asgi_channel_class():
    """AsgiChannel, defined on first use: asyncio is imported only by ASGI
    workers."""
    import asyncio

    class Events:
        """What Caddy sent for one request, for its app to receive (see
        QUEUE_MEMORY), in order. A payload past the memory bound is kept in
        the spill file, its place in the queue an (offset, size) pair. (Not
        an asyncio.Queue: most requests receive nothing, and a request makes
        one of these.)"""

        # the state of a request that received nothing yet (class
        # attributes: a request sets only what changes)
        items = None  # a deque of what came, once something did
        waiters = None  # futures of get()s waiting for something to come
        peer_closed = False  # a cancel or a WebSocket close came
        timed_out = False  # Caddy gave up on the request (TIMED_OUT): its task was cancelled
        state = None  # the HTTP request's state (its handler's), for time_out to end its stream
        websocket = False  # a WebSocket's: messages came
        close_sent = False  # the WebSocket's close went out (the app's or the runtime's)
        finished = False  # the request's handler ended
        held = 0  # the memory its queue holds: the payloads in memory, and ITEM_COST for each item
        spill = None  # the spill file, once needed
        spill_end = 0
        spill_failed = None  # why the spill file failed, once it did

        def __init__(self, channel, sid):
            self.channel, self.sid = channel, sid

        def push(self, item):
            """Queue item and wake whoever waits for one."""
            if self.items is None:
                self.items = collections.deque()
            self.items.append(item)
            if self.waiters:
                for waiter in self.waiters:
                    if not waiter.done():
                        waiter.set_result(None)

        def hold(self, size):
            """Count size more (or, negative, fewer) bytes held, for the
            request and for its worker."""
            self.held += size
            self.channel.worker.held += size

        def put_nowait(self, item):
            if item is not None:
                kind, flags, payload = item
                if kind in (REQ_BODY, WS_MSG):
                    if self.finished and kind == REQ_BODY and flags & END:
                        self.push((kind, flags, b''))  # the body's end, for the handler's last wait
                        return
                    if self.finished or self.close_sent or kind == REQ_BODY and self.peer_closed:
                        return  # nobody will take it
                    cost = len(payload) + ITEM_COST
                    if kind == WS_MSG:
                        self.websocket = True
                        if self.held + cost > WS_BACKLOG:
                            self.overflow('its app had %d bytes of messages to receive' % self.held)
                            return
                        if not self.channel.worker.make_room(cost, self):
                            return  # (this WebSocket's app was the furthest behind: closed)
                    elif payload and (self.held + cost > QUEUE_MEMORY or
                                      self.channel.worker.held + cost > WORKER_MEMORY // 2):
                        # past the request's or the worker's share, to the
                        # file (bounded by max_body); a WebSocket's messages
                        # stay in memory: at a steady lag the file would
                        # never be read to its end, so never reused
                        place = self.spilled(payload)
                        if place is None and (self.held + cost > QUEUE_MEMORY or
                                              self.channel.worker.held + cost > WORKER_MEMORY):
                            self.give_up('cannot keep a request\'s body: its temporary file failed (%s), and the '
                                         'worker holds %d bytes for its requests: the request is ended (a 500 if its response had not begun). '
                                         'Free space in the temporary directory ($TMPDIR)' % (self.spill_failed, self.channel.worker.held))
                            return
                        if place is not None:
                            last = self.items[-1] if self.items else None
                            if (last is not None and last[0] == REQ_BODY and type(last[2]) is tuple and
                                    last[2][1] + place[1] <= SPILL_CHUNK):
                                # the chunk before it is in the file too, just before it (the
                                # file is written in order, and emptied only once all is read)
                                self.items[-1] = (REQ_BODY, flags, (last[2][0], last[2][1] + place[1]))
                                return
                            item, cost = (kind, flags, place), ITEM_COST
                    self.hold(cost)
            self.push(item)

        def spilled(self, payload):
            """Where payload went in the spill file, as (offset, size), or
            None when it cannot go there (no file, a full disk): it is then
            kept in memory while the request and the worker have room, and
            the request is given up past that."""
            try:
                if self.spill is None:
                    import tempfile
                    self.spill = tempfile.TemporaryFile(prefix='hearth-asgi-')
                view, offset = memoryview(payload), self.spill_end
                while view:
                    written = os.pwrite(self.spill.fileno(), view, offset)
                    view, offset = view[written:], offset + written
            except OSError as exc:
                if not self.spill_failed:
                    self.spill_failed = exc
                    sys.stderr.write('hearth worker %d: cannot keep a request\'s backlog in a temporary file (%s); '
                                     'it stays in memory while there is room\n' % (os.getpid(), exc))
                return None
            place = (self.spill_end, len(payload))
            self.spill_end += len(payload)
            return place

        async def get(self):
            """The next item, once there is one (any number of tasks may
            wait: each item goes to one of them)."""
            while not self.items:
                if self.peer_closed:
                    # the client's cancel or close was taken by another
                    # task's receive(): nothing more will come
                    return None
                waiter = self.channel.loop.create_future()
                if self.waiters is None:
                    self.waiters = []
                self.waiters.append(waiter)
                try:
                    await waiter
                finally:
                    self.waiters.remove(waiter)
            item = self.items.popleft()
            if item is not None and item[0] in (REQ_BODY, WS_MSG) and not self.finished:
                kind, flags, payload = item
                if type(payload) is tuple:
                    offset, size = payload
                    payload = os.pread(self.spill.fileno(), size, offset)
                    if offset + size == self.spill_end:  # all read: start over
                        self.spill.truncate(0)
                        self.spill_end = 0
                    item = (kind, flags, payload)
                    self.hold(-ITEM_COST)
                else:
                    self.hold(-len(payload) - ITEM_COST)
            return item

        def give_up(self, why):
            """End the request at once (a 500, or an abort after its head),
            cancel its task and give back what it holds."""
            request = self.channel.request
            if request is not None and request[1] is self and not request[2].done():
                self.channel.worker.time_out(self, request[2], why)
            else:
                self.finish()

        def drop_queued(self):
            """Give back what the queue holds: a WebSocket's messages are
            dropped, a body's chunks keep only their END flag."""
            if self.items:
                self.items = collections.deque(
                    item if item is None or item[0] != REQ_BODY else (REQ_BODY, item[1], b'')
                    for item in self.items if item is None or item[0] != WS_MSG)
            if self.held:
                self.hold(-self.held)

        def finish(self):
            """The request's handler ended: what still comes is dropped."""
            self.finished = True
            self.channel.running.pop(self, None)
            if self.held:
                self.drop_queued()
            if self.spill is not None:
                self.spill.close()
                self.spill = None

        def overflow(self, why):
            """Close a WebSocket whose app does not receive as fast as its
            client sends: what it had not received is dropped, its app
            receives the disconnect (1009), its send raises."""
            reason = b'the app receives messages more slowly than they come'
            payload = struct.pack('!H', WS_TOO_SLOW) + reason
            self.channel.write(_pack(len(payload), WS_CLOSE, 0, self.sid) + payload)
            self.close_sent = self.peer_closed = True
            self.drop_queued()
            self.push((WS_CLOSE, 0, struct.pack('!H', WS_TOO_SLOW)))
            sys.stderr.write('hearth worker %d: closed a WebSocket (1009): %s\n' % (os.getpid(), why))

    class AsgiChannel(asyncio.BufferedProtocol):
        """One channel to Caddy for an ASGI worker. Frames are parsed as they
        arrive (no reader task between the socket and the request) and
        routed to the request in progress, which runs as its own task; the
        channel is also that request's writer (write, drain).

        It reads into a buffer of its own (a BufferedProtocol): asyncio's
        plain Protocol receives each read as a new bytes object of its
        maximum read size, 256 KiB, which glibc maps and unmaps for every
        request (mmap, mremap, munmap: three system calls per read)."""

        def __init__(self, worker):
            self.worker = worker
            self.buffer = bytearray(READ_BUFFER)  # bytes read: frames from start to end
            self.view = memoryview(self.buffer)
            self.start = 0  # the first byte not parsed yet
            self.end = 0  # the end of what was read
            self.request = None  # (stream id, its events queue, its task)
            self.running = {}  # events → task of every request whose handler runs (an app may go on after its response)
            self.loop = asyncio.get_running_loop()
            self.closed = self.loop.create_future()  # done when Caddy closed it and its request ended
            self.paused = False
            self.drain_waiters = []
            self.lost = None

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            """Where the next read goes: the free end of the buffer, after
            moving a partial frame to its front, or into a larger buffer when
            that frame does not fit."""
            if self.end == len(self.buffer):
                pending = self.end - self.start
                needed = HEADER_SIZE
                if pending >= HEADER_SIZE:
                    needed += HEADER.unpack_from(self.buffer, self.start)[0]
                if needed > len(self.buffer):  # (sizes were checked when the header arrived)
                    grown = bytearray(max(needed, 2 * len(self.buffer)))
                    grown[:pending] = self.view[self.start:self.end]
                    self.view.release()
                    self.buffer, self.view = grown, memoryview(grown)
                else:
                    self.view[:pending] = self.view[self.start:self.end]
                self.start, self.end = 0, pending
            return self.view[self.end:]

        def buffer_updated(self, nbytes):
            self.end += nbytes
            buffer, offset, end = self.buffer, self.start, self.end
            try:
                while end - offset >= HEADER_SIZE:
                    size, kind, flags, sid = HEADER.unpack_from(buffer, offset)
                    if size > MAX_PAYLOAD:
                        raise ProtocolError('frame announces %d bytes, more than the maximum %d' % (size, MAX_PAYLOAD))
                    frame_end = offset + HEADER_SIZE + size
                    if end < frame_end:
                        break
                    self.route(kind, flags, sid, bytes(self.view[offset + HEADER_SIZE:frame_end]))
                    offset = frame_end
            except ProtocolError as exc:
                sys.stderr.write('hearth worker %d: protocol error from Caddy: %s; closing the connection\n' % (os.getpid(), exc))
                os._exit(3)
            if offset == end:
                self.start = self.end = 0
                if len(buffer) > READ_BUFFER:  # a large frame passed: give its memory back
                    self.view.release()
                    self.buffer = bytearray(READ_BUFFER)
                    self.view = memoryview(self.buffer)
            elif len(buffer) > READ_BUFFER and end - offset <= READ_BUFFER // 2:
                # a large frame passed and the next one's start came with
                # it: keep that start in a buffer of the normal size
                pending = end - offset
                small = bytearray(READ_BUFFER)
                small[:pending] = self.view[offset:end]
                self.view.release()
                self.buffer, self.view = small, memoryview(small)
                self.start, self.end = 0, pending
            else:
                self.start = offset

        def route(self, kind, flags, sid, payload):
            request = self.request
            if kind == REQ_HEAD:
                # (the previous request's task may still be reading the
                # frames routed to it; it finishes on its own)
                events = Events(self, sid)
                task = self.loop.create_task(self.worker.handle(self, sid, payload, bool(flags & END), events))
                self.request = (sid, events, task)
                self.running[events] = task  # (until events.finish)
            elif kind in (REQ_BODY, CANCEL, WS_MSG, WS_CLOSE) and request is not None and sid == request[0]:
                if kind in (CANCEL, WS_CLOSE):
                    request[1].peer_closed = True
                request[1].put_nowait((kind, flags, payload))
                if kind == CANCEL and flags & TIMED_OUT and not request[2].done():
                    self.worker.time_out(request[1], request[2], REFUSED_WHY if flags & REFUSED else None)
            elif kind not in (CANCEL, WS_MSG, WS_CLOSE):  # those may come for a request that already ended
                raise ProtocolError('unexpected frame type %d for stream %d' % (kind, sid))

        def eof_received(self):
            return False  # close the transport: connection_lost follows

        def connection_lost(self, exc):
            if self.end > self.start:
                sys.stderr.write('hearth worker %d: protocol error from Caddy: truncated frame; closing the connection\n' % os.getpid())
                os._exit(3)
            if exc is not None:
                sys.stderr.write('hearth worker %d: connection to Caddy lost: %s\n' % (os.getpid(), exc))
                os._exit(3)
            self.lost = ChannelLost('the connection to Caddy closed')
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


def path_without_root(app):
    """Whether app reads scope['path'] without root_path: Starlette before
    0.35 (Debian 12's 0.26, FastAPI's base) and Quart before 0.19 route on
    path as the servers of their day gave it, without the mount point;
    Django, asgiref, later Starlette and Quart take path with it, as the
    ASGI spec has it, and so does any other app. Judged on the app itself,
    through the middleware that keeps it as .app (Sentry's, Starlette's),
    not on what the process imported: Sentry's SDK imports Starlette into a
    Django worker."""
    for _ in range(16):
        inner = getattr(app, 'app', None)
        if inner is None or inner is app or not callable(inner):
            break
        app = inner
    package = (getattr(type(app), '__module__', None) or '').split('.')[0]
    if package in ('starlette', 'fastapi'):
        return _older('starlette', (0, 35))
    if package == 'quart':
        return _older('quart', (0, 19))
    return False


def _older(package, version):
    """Whether the installed package is older than version (False when its
    version cannot be told)."""
    try:
        from importlib.metadata import version as installed
        major, minor = (int(part) for part in installed(package).split('.')[:2])
    except Exception:
        return False
    return (major, minor) < version


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
        self.channels = []  # its AsgiChannels, once open
        self.held = 0  # what its requests' queues hold in memory (Events.held, summed)
        # response heads waiting for their body, as (channel, request
        # state): held since the last tick of held_heads_timer, and before
        self.held_heads, self.older_heads = [], []
        self.held_heads_timer = None
        self.path_without_root = path_without_root(app)

    def time_out(self, events, task, why=None):
        """Caddy gave up on a request (its timeout ran out before its
        response began, or its client left and the app did not end it), or
        the runtime did (why says why): end its stream at once (a 500, or an
        abort after a head that went out), so that an app slow to stop (a
        cleanup that awaits, a swallowed CancelledError) does not pass for a
        blocked event loop; cancel its task (CancelledError where it awaits;
        the other requests go on), and log where that was."""
        if events.timed_out:
            return  # (Caddy's cancel crossed the runtime's own giving up)
        events.timed_out = True
        state = events.state
        if state is not None and 'accepted' in state:  # a WebSocket's
            if not state['ended']:
                if state['accepted']:  # (its client closed or left: the channel is free again)
                    events.channel.write(_pack(0, RESP_BODY, END, events.sid))
                else:
                    send_500(events.channel.write, events.sid)
                state['closed'] = state['ended'] = True
        elif state is None and not task.done():
            # the loop was held up so long that its handler never started
            # (cancelled now, it never will): the stream ends here
            send_500(events.channel.write, events.sid)
        elif state is not None and not state['ended']:
            if not state['started'] or state['head'] is not None:
                send_500(events.channel.write, events.sid)
            else:
                message = ('CancelledError: %s' % (why or 'Caddy gave up on the request')).encode('utf-8', 'replace')[:4096]
                events.channel.write(_pack(len(message), ABORT, 0, events.sid) + message)
            state['head'], state['ended'] = None, True
        # what it holds is given back now: once its stream ended, its
        # channel serves another request, and make_room no longer sees it
        events.finish()
        task.cancel()
        if why is REFUSED_WHY:  # (one line: a client may ask again and again)
            sys.stderr.write('hearth worker %d: %s; cancelled its task\n' % (os.getpid(), why))
            return
        try:
            where = ''.join(awaiting(task.get_coro())) if state is not None else '  (before its handler started)\n'
        except Exception as exc:  # an awaitable's own attributes may raise
            where = '  (not known: %r)\n' % exc
        why = why or 'Caddy gave up on a request (past its timeout, or its client gone)'
        sys.stderr.write('hearth worker %d: %s; cancelled it where it waited (most recent call last):\n%s'
                         % (os.getpid(), why, where))

    def make_room(self, size, asking):
        """Whether the worker may hold size more bytes for the WebSocket
        whose queue is asking: past WORKER_MEMORY, the open WebSocket whose
        app is furthest behind is closed (its queue dropped), until there is
        room; False when that WebSocket is asking itself."""
        while self.held + size > WORKER_MEMORY:
            furthest, most = None, 0
            for channel in self.channels:
                events = channel.request[1] if channel.request is not None else None
                if events is not None and events.websocket and not events.close_sent:
                    behind = events.held + size if events is asking else events.held
                    if behind > most:
                        furthest, most = events, behind
            if furthest is None:
                return True  # (what is held is bodies', which stop at half)
            furthest.overflow('the worker held %d bytes for its requests; this WebSocket\'s app had %d of them '
                              'to receive, the most' % (self.held, most))
            if furthest is asking:
                return False
        return True

    def hold_head(self, writer, state):
        """Keep a response head (state['head']) back for its body, for
        HEAD_HOLD to twice that."""
        self.held_heads.append((writer, state))
        if self.held_heads_timer is None:
            self.held_heads_timer = writer.loop.call_later(HEAD_HOLD, self.send_held_heads, writer.loop)

    def send_held_heads(self, loop):
        """Send the response heads held since before the last tick whose
        apps are still waiting for something else than their body (the
        first event of an event stream, a slow query)."""
        for writer, state in self.older_heads:
            if state['head'] is not None and not state['ended']:
                writer.write(state['head'])
                state['head'] = None
        self.older_heads, self.held_heads = self.held_heads, []
        self.held_heads_timer = loop.call_later(HEAD_HOLD, self.send_held_heads, loop) if self.older_heads else None

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
        self.channels = channels
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
        root_path = env.get('SCRIPT_NAME', '').encode('latin-1').decode('utf-8', 'replace')
        if not self.path_without_root:
            # the path the client asked for, mount point included, as the
            # ASGI spec has it: Django and asgiref take root_path off path
            # (given without it, /app/apple under /app reached Django as
            # "le", and /app/app/admin/ passed a rule on /app/admin/* as
            # /admin/)
            path = root_path + path
        return {
            'type': 'http', 'asgi': {'version': '3.0', 'spec_version': '2.3'},
            'http_version': '2' if protocol.startswith('2') else ('1.0' if protocol == '1.0' else '1.1'),
            'method': env.get('REQUEST_METHOD', 'GET'), 'scheme': env.get('wsgi.url_scheme', 'http'),
            'path': path, 'raw_path': raw_path or path.encode('utf-8'),
            'query_string': env.get('QUERY_STRING', '').encode('latin-1'),
            'root_path': root_path, 'headers': headers,
            'client': [env.get('REMOTE_ADDR', ''), port_number(env.get('REMOTE_PORT'))],
            'server': [env.get('SERVER_NAME', ''), port_number(env.get('SERVER_PORT'))],
            'state': dict(self.state),
        }

    async def handle(self, writer, sid, payload, no_body, events):
        """Serve one request (HTTP or WebSocket) whose frames come through
        events; however it ends, events.finish() is called (what still
        comes for it is dropped)."""
        import asyncio
        fields = payload.decode('latin-1').split('\0')
        if not len(fields) & 1:  # pairs, each ended by a NUL, then ''
            events.finish()
            raise ProtocolError('malformed request head (%d fields)' % len(fields))
        pairs = iter(fields)
        env = dict(zip(pairs, pairs))
        try:
            scope = self.scope(env)
        except Exception:
            sys.stderr.write('Error building the ASGI scope of %r\n%s' % (env.get('PATH_INFO'), traceback.format_exc()))
            send_500(writer.write, sid)
            events.finish()
            return
        if env.get('hearth.websocket') == '1':
            return await self.handle_websocket(writer, sid, scope, events)
        state = {'body_done': no_body, 'body_sent': False, 'disconnected': False, 'started': False,
                 'ended': False, 'head': None}
        events.state = state
        self.busy += 1

        async def next_event():
            event = await events.get()
            if event is None or event[0] == CANCEL:
                state['disconnected'] = True
                return None
            return event

        async def receive():
            if state['ended']:
                # the response is complete: nothing more will come for it
                # (a task that waits for the disconnect must not wait forever)
                return {'type': 'http.disconnect'}
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
                # the head goes with the first body message (one write), or
                # on its own once the app has waited HEAD_HOLD for something
                # else first (server-sent events): the request's timeout
                # ends with it
                self.hold_head(writer, state)
            elif kind == 'http.response.body':
                if not state['started']:
                    raise RuntimeError('http.response.body before http.response.start')
                if events.timed_out:  # (an app that swallowed the cancel learns it may stop)
                    raise ClientDisconnected('the request was given up (the worker\'s log says why)')
                if state['ended']:
                    return
                if events.peer_closed:
                    raise ClientDisconnected('the client is gone')
                body = message_bytes(message, 'body', 'http.response.body')
                more = bool(message.get('more_body', False))
                if state['head'] is not None and not more and len(body) <= MAX_PAYLOAD:
                    data = frames(RESP_BODY, sid, body, True)  # the whole response: one frame
                else:
                    data = frames(RESP_BODY, sid, body, not more, STREAM_FRAME)
                if state['head'] is not None:
                    data, state['head'] = state['head'] + data, None
                writer.write(data)
                if not more:
                    # the app's receive says http.disconnect from now on: the
                    # body it did not read is dropped (an app may go on
                    # running, its background tasks, long after)
                    state['ended'] = True
                    events.finish()
                await writer.drain()  # a slow client slows the app down
            else:
                raise RuntimeError('unknown ASGI message type %r' % kind)

        try:
            await self.app(scope, receive, send)
            if not state['started'] and not events.timed_out:
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
        except (ProtocolError, ChannelLost):
            raise
        except BaseException as exc:
            if not (events.timed_out and isinstance(exc, asyncio.CancelledError)):  # (time_out logged where)
                text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                sys.stderr.write('Error handling request %s %r\n%s' % (scope['method'], scope['path'], text))
            if state['ended']:
                pass  # (time_out, or the response was complete)
            elif not state['started'] or state['head'] is not None:
                send_500(writer.write, sid)
            else:
                message = ('%s: %s' % (type(exc).__name__, exc)).encode('utf-8', 'replace')[:4096]
                writer.write(_pack(len(message), ABORT, 0, sid) + message)
            # the stream is over: a head still held must not follow (hold_head)
            state['head'], state['ended'] = None, True
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.busy -= 1
            # the body the app did not read is dropped as it comes, up to its end
            events.finish()
        await writer.drain()
        while not state['body_done'] and not state['disconnected']:
            event = await next_event()
            if event is not None:
                state['body_done'] = bool(event[1] & END)

    async def handle_websocket(self, writer, sid, scope, events):
        """A WebSocket: connect, then messages both ways, until a close."""
        import asyncio
        scope = dict(scope, type='websocket', scheme='wss' if scope['scheme'] == 'https' else 'ws')
        protocols = [v.decode('latin-1') for k, v in scope['headers'] if k == b'sec-websocket-protocol']
        scope['subprotocols'] = [p.strip() for v in protocols for p in v.split(',') if p.strip()]
        state = {'connected': False, 'accepted': False, 'closed': False, 'ended': False}
        events.state = state
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
            if state['ended']:
                raise ClientDisconnected('the WebSocket has ended')
            if kind == 'websocket.accept':
                if state['accepted']:
                    raise RuntimeError('websocket.accept sent twice')
                if state['closed']:
                    raise ClientDisconnected('the WebSocket is closed')
                sub = (message.get('subprotocol') or '').encode('latin-1')
                state['accepted'] = True
                writer.write(_pack(len(sub), WS_ACCEPT, 0, sid) + sub)
            elif kind == 'websocket.send':
                if state['accepted'] and (state['closed'] or events.peer_closed):
                    raise ClientDisconnected('the WebSocket is closed')
                if not state['accepted']:
                    return
                if message.get('bytes') is not None:
                    data, flags = message_bytes(message, 'bytes', 'websocket.send'), BINARY
                else:
                    data, flags = str(message.get('text', '')).encode('utf-8'), 0
                if len(data) > MAX_PAYLOAD:
                    # one frame carries one message: a larger frame would
                    # break the channel, and its worker with every request
                    raise ValueError('a WebSocket message may be at most %d bytes (1 MiB), as one from a client; '
                                     'this one is %d: send it in parts' % (MAX_PAYLOAD, len(data)))
                writer.write(_pack(len(data), WS_MSG, flags, sid) + data)
            elif kind == 'websocket.close':
                if not state['accepted']:  # refused before the handshake: 403
                    body = b'Forbidden\n'
                    head = b'403 Forbidden\0Content-Type\0text/plain\0Content-Length\0' + str(len(body)).encode()
                    writer.write(_pack(len(head), RESP_HEAD, 0, sid) + head + _pack(len(body), RESP_BODY, END, sid) + body)
                    state['ended'] = True
                elif not state['closed'] and not events.close_sent:
                    code = int(message.get('code', 1000))
                    reason = (message.get('reason') or '').encode('utf-8')[:120]
                    payload = struct.pack('!H', code) + reason
                    writer.write(_pack(len(payload), WS_CLOSE, 0, sid) + payload)
                    events.close_sent = True
                state['closed'] = True
            else:
                raise RuntimeError('unknown ASGI message type %r' % kind)
            await writer.drain()

        failed = None
        try:
            await self.app(scope, receive, send)
        except ClientDisconnected:
            pass  # the app learnt the client was gone; the stream ends below
        except BaseException as exc:
            # (a CancelledError too: the stream must end however the task does)
            if not (events.timed_out and isinstance(exc, asyncio.CancelledError)):  # (time_out logged where)
                text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                sys.stderr.write('Error in WebSocket %r\n%s' % (scope['path'], text))
            if not state['accepted'] and not state['ended']:
                send_500(writer.write, sid)
                state['ended'] = True
            failed = exc
        finally:
            self.busy -= 1
            events.finish()  # messages that still come are dropped
        if not state['ended']:
            if not state['accepted']:  # the app returned without accepting
                await send({'type': 'websocket.close'})
            else:
                if not state['closed'] and not events.close_sent:
                    payload = struct.pack('!H', 1011 if failed is not None else 1000)
                    writer.write(_pack(len(payload), WS_CLOSE, 0, sid) + payload)
                writer.write(_pack(0, RESP_BODY, END, sid))  # the channel is free again
                # a task the app left behind may still hold send: nothing
                # more may go out on this stream (the channel's next request
                # would get it, and Caddy would end the worker)
                state['closed'] = state['ended'] = True
        if isinstance(failed, asyncio.CancelledError):
            raise failed
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
            deadline, lost_deadline = loop.time() + 30, loop.time() + LOST_GRACE
            while self.busy and loop.time() < deadline:
                if loop.time() >= lost_deadline:
                    # requests whose channel Caddy closed (it stopped this
                    # worker with them in flight) have nobody to answer:
                    # those still running once told (a WebSocket app
                    # waiting for an event) are cancelled, so that the
                    # lifespan shutdown runs before Caddy's SIGKILL; work
                    # an app does after its response ended (background
                    # tasks) goes on until then
                    lost_deadline = deadline
                    lost = [(task, events) for c in channels if c.lost is not None
                            for events, task in c.running.items()
                            if not task.done() and not (events.state and events.state.get('ended'))]
                    for task, events in lost:
                        events.timed_out = True  # (no traceback for each: the line below says why)
                        task.cancel()
                    if lost:
                        sys.stderr.write('hearth worker %d: stopping; cancelled %d requests whose connection Caddy closed\n'
                                         % (os.getpid(), len(lost)))
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


def message_bytes(message, key, kind):
    """message[key] as bytes, refused unless bytes-like: bytes(n) of an int
    would make n zero bytes (an app's bug allocating a gigabyte)."""
    value = message.get(key, b'')
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError('%s: %r must be bytes, not %s' % (kind, key, type(value).__name__))
    return bytes(value)
