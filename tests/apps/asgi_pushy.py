"""An ASGI app that pushes without listening, for the integrity tests:
/bad-header-stream answers with a header name HTTP does not allow (the
runtime lets it through; Caddy refuses it) and then streams forever;
the WebSocket /bogus accepts with a subprotocol nobody offered and then
sends forever. Both stop only when send() raises. /ok answers "ok"."""
import asyncio


async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        return
    if scope['type'] == 'websocket':
        await receive()
        await send({'type': 'websocket.accept', 'subprotocol': 'bogus'})
        while True:
            await send({'type': 'websocket.send', 'text': 'tick'})
            await asyncio.sleep(0.02)
    await receive()
    if scope['path'] == '/bad-header-stream':
        await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'bad name', b'x')]})
        while True:
            await send({'type': 'http.response.body', 'body': b'tick\n', 'more_body': True})
            await asyncio.sleep(0.02)
    body = ('ok %s %s' % (scope['server'][1], scope['root_path'])).encode()
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
    await send({'type': 'http.response.body', 'body': body})
