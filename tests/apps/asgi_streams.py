"""Long ASGI responses: /sse?n=5&delay=0.8 sends n events delay seconds
apart (a stream that outlasts the request's timeout); /flood sends 1 MiB
chunks until the client is gone, then writes "disconnected" to the file
named by STREAM_MARKER; anything else says hello with the worker's pid."""
import asyncio
import os
from urllib.parse import parse_qs


async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        while True:
            message = await receive()
            if message['type'] == 'lifespan.startup':
                await send({'type': 'lifespan.startup.complete'})
            elif message['type'] == 'lifespan.shutdown':
                await send({'type': 'lifespan.shutdown.complete'})
                return
    path = scope['path']
    query = parse_qs(scope['query_string'].decode())
    if path == '/sse':
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'text/event-stream')]})
        n, delay = int(query.get('n', ['5'])[0]), float(query.get('delay', ['0.8'])[0])
        for i in range(n):
            await asyncio.sleep(delay)
            await send({'type': 'http.response.body', 'body': b'data: %d\n\n' % i, 'more_body': i < n - 1})
        return
    if path == '/flood':
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'application/octet-stream')]})
        chunk = b'x' * (1 << 20)
        try:
            while True:
                await send({'type': 'http.response.body', 'body': chunk, 'more_body': True})
        except OSError:
            with open(os.environ['STREAM_MARKER'], 'w') as f:
                f.write('disconnected')
            raise
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
    await send({'type': 'http.response.body', 'body': ('hello from %d\n' % os.getpid()).encode()})
