"""The ASGI lifespan protocol, for the test apps that need nothing done at
startup or shutdown: `if scope['type'] == 'lifespan': return await
serve_lifespan(receive, send)`."""


async def serve_lifespan(receive, send):
    while True:
        message = await receive()
        if message['type'] == 'lifespan.startup':
            await send({'type': 'lifespan.startup.complete'})
        elif message['type'] == 'lifespan.shutdown':
            await send({'type': 'lifespan.shutdown.complete'})
            return
