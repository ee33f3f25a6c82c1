"""Long ASGI responses: /sse?n=5&delay=0.8 sends n events delay seconds
apart (a stream that outlasts the request's timeout); /sse-wait sends its
head and waits for the client to leave (then writes $STREAM_MARKER.wait);
/sse-deaf sends its head and waits an hour, deaf to the client's leaving;
/start-raise fails right after its head; /head-wait-raise?delay=0.2 fails
after its head (with a cookie) went out; /flood sends 1 MiB
chunks until the client is gone, then writes "disconnected" to the file
named by STREAM_MARKER (/flood?mib=2: 2 MiB, then the end); /first-block sends its head and a first event,
then holds its event loop up for 20 s (a time.sleep); /background?secs=5 answers, then works
on for secs seconds and writes $STREAM_MARKER.background; the WebSocket /ws-deaf accepts and waits an hour,
neither receiving nor sending, /ws-silent waits an hour before it
accepts, /ws-slow?secs=0.5 accepts after secs seconds, notes the
client's leaving in $STREAM_MARKER.ws-slow-left and waits, and /ws-late holds its event loop up for 2.5 s, then accepts and
waits (each writes $STREAM_MARKER.<its name> when cancelled); /big?kib=1000&wait=0.3
answers kib KiB in one message after wait seconds; /drip?n=1000&size=1
sends n body messages of size bytes, then "end"; /ws-flood
sends 64 KiB messages as fast as it can, until its send raises; anything
else says hello with the worker's pid."""
import asyncio
import os
import time
from urllib.parse import parse_qs

from asgi_lifespan import serve_lifespan


async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        return await serve_lifespan(receive, send)
    path = scope['path']
    query = parse_qs(scope['query_string'].decode())
    if scope['type'] == 'websocket':
        await receive()  # connect
        if path == '/ws-deaf':
            await send({'type': 'websocket.accept'})
        if path == '/ws-flood':
            # sends until its send raises, then writes $STREAM_MARKER.ws-flood
            await send({'type': 'websocket.accept'})
            try:
                while True:
                    await send({'type': 'websocket.send', 'bytes': b'x' * 65536})
            except OSError as exc:
                with open(os.environ['STREAM_MARKER'] + '.ws-flood', 'w') as f:
                    f.write('send raised %s' % type(exc).__name__)
                return
        if path == '/ws-slow':
            # accepts ?secs= seconds after its opening (the event loop free
            # meanwhile), notes the client's leaving in $STREAM_MARKER.ws-slow-left
            # (a line each), then waits as /ws-deaf does
            await asyncio.sleep(float(query.get('secs', ['0.5'])[0]))
            await send({'type': 'websocket.accept'})
            if (await receive())['type'] == 'websocket.disconnect':
                with open(os.environ['STREAM_MARKER'] + '.ws-slow-left', 'a') as f:
                    f.write('left\n')
        if path == '/ws-late':
            time.sleep(2.5)  # (the event loop held up past the timeout)
            await send({'type': 'websocket.accept'})
            await send({'type': 'websocket.send', 'text': 'too late'})
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            with open(os.environ['STREAM_MARKER'] + '.' + path.strip('/'), 'w') as f:
                f.write('cancelled')
            raise
    if path == '/big':
        # a whole answer of ?kib= KiB (at most 1000) in one message, after
        # ?wait= seconds
        await asyncio.sleep(float(query.get('wait', ['0'])[0]))
        body = b'x' * (min(int(query.get('kib', ['1'])[0]), 1000) << 10)
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'text/plain'), (b'content-length', str(len(body)).encode())]})
        await send({'type': 'http.response.body', 'body': body})
        return
    if path == '/sse':
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'text/event-stream')]})
        n, delay = int(query.get('n', ['5'])[0]), float(query.get('delay', ['0.8'])[0])
        for i in range(n):
            await asyncio.sleep(delay)
            await send({'type': 'http.response.body', 'body': b'data: %d\n\n' % i, 'more_body': i < n - 1})
        return
    if path == '/sse-wait':
        # a head, then nothing until the client leaves
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'text/event-stream')]})
        while (await receive())['type'] != 'http.disconnect':
            pass
        with open(os.environ['STREAM_MARKER'] + '.wait', 'w') as f:
            f.write('left before the first event')
        return
    if path == '/sse-deaf':
        # a head, then a wait for an event that never comes, not listening
        # for the client's leaving (writes $STREAM_MARKER.deaf when cancelled)
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'text/event-stream')]})
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            with open(os.environ['STREAM_MARKER'] + '.deaf', 'w') as f:
                f.write('cancelled')
            raise
    if path == '/first-block':
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'text/event-stream')]})
        await send({'type': 'http.response.body', 'body': b'data: 0\n\n', 'more_body': True})
        time.sleep(20)  # (the event loop held up: nothing it is told is heard)
        return
    if path == '/background':
        # answers at once, then works on for secs seconds (a background
        # task), then writes $STREAM_MARKER.background
        await send({'type': 'http.response.start', 'status': 200, 'headers': []})
        await send({'type': 'http.response.body', 'body': b'accepted'})
        await asyncio.sleep(float(query.get('secs', ['5'])[0]))
        with open(os.environ['STREAM_MARKER'] + '.background', 'w') as f:
            f.write('done')
        return
    if path == '/start-raise':
        # a head, then a failure before any body
        await send({'type': 'http.response.start', 'status': 200, 'headers': []})
        raise RuntimeError('failed right after its head')
    if path == '/head-wait-raise':
        # a head with a cookie, sent (the app awaits delay seconds), then a
        # failure before any body
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'set-cookie', b'session=not-for-an-error'), (b'location', b'/elsewhere'),
                                (b'content-length', b'100')]})
        await asyncio.sleep(float(query.get('delay', ['0.2'])[0]))
        raise RuntimeError('failed after its head went out')
    if path == '/drip':
        # ?n= body messages of ?size= bytes each (0: empty ones), as fast
        # as the app can send them, then the end
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'text/plain')]})
        n, piece = int(query.get('n', ['1000'])[0]), b'x' * int(query.get('size', ['1'])[0])
        for _ in range(n):
            await send({'type': 'http.response.body', 'body': piece, 'more_body': True})
        await send({'type': 'http.response.body', 'body': b'end'})
        return
    if path == '/flood':
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'application/octet-stream')]})
        chunk = b'x' * (1 << 20)
        mib = int(query.get('mib', ['0'])[0])
        try:
            sent = 0
            while not mib or sent < mib:
                sent += 1
                await send({'type': 'http.response.body', 'body': chunk, 'more_body': sent != mib})
            return
        except OSError:
            with open(os.environ['STREAM_MARKER'], 'w') as f:
                f.write('disconnected')
            raise
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
    await send({'type': 'http.response.body', 'body': ('hello from %d\n' % os.getpid()).encode()})
