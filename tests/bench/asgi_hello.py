"""Hello world: the smallest ASGI 3 app (no framework), for tests/bench/run.sh."""

BODY = b'Hello, world!\n'
HEADERS = [(b'content-type', b'text/plain'), (b'content-length', str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        while True:
            message = await receive()
            if message['type'] == 'lifespan.startup':
                await send({'type': 'lifespan.startup.complete'})
            elif message['type'] == 'lifespan.shutdown':
                await send({'type': 'lifespan.shutdown.complete'})
                return
    if scope['type'] != 'http':
        raise RuntimeError(f"asgi_hello serves http only, not {scope['type']}")
    await send({'type': 'http.response.start', 'status': 200, 'headers': HEADERS})
    await send({'type': 'http.response.body', 'body': BODY})
