"""A FastAPI app (Debian's python3-fastapi): path, query and body
validation, a streaming endpoint, a lifespan that fills app state, an
endpoint that sleeps (awaiting) and one that blocks its event loop, and an
endpoint that notices when its client goes away."""
import asyncio
import os
import time
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


app = FastAPI()


@app.on_event('startup')
async def startup():
    # runs in the lifespan protocol, before the worker takes requests
    app.state.started_in = os.getpid()


class Item(BaseModel):
    name: str
    price: float


@app.get('/items/{item_id}')
async def read_item(item_id: int, q: str = 'none'):
    return {'item_id': item_id, 'q': q, 'pid': os.getpid(), 'started_in': app.state.started_in}


@app.post('/items')
async def create_item(item: Item):
    return {'name': item.name, 'price_with_tax': round(item.price * 1.2, 2)}


@app.get('/scope')
async def scope(request: Request):
    s = request.scope
    return {'http_version': s['http_version'], 'scheme': s['scheme'], 'client': list(s['client']),
            'server': list(s['server']), 'root_path': s['root_path'], 'path': s['path'],
            'raw_path': s['raw_path'].decode(), 'query_string': s['query_string'].decode(),
            'headers': [[k.decode(), v.decode()] for k, v in s['headers']]}


@app.get('/stream')
async def stream(n: int = 5, delay: float = 0.2):
    async def chunks():
        for i in range(n):
            yield ('chunk %d\n' % i).encode()
            await asyncio.sleep(delay)
    return StreamingResponse(chunks(), media_type='text/plain')


@app.get('/sleep')
async def sleep(seconds: float):
    await asyncio.sleep(seconds)
    return {'slept': seconds, 'pid': os.getpid()}


@app.get('/block')
async def block(seconds: float):
    # a blocking call in async code: the whole event loop waits
    time.sleep(seconds)
    return {'blocked': seconds, 'pid': os.getpid()}


async def disconnect_app(scope, receive, send):
    """Streams until the client leaves, then writes the marker file."""
    assert scope['type'] == 'http'
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
    marker = os.environ['DISCONNECT_MARKER']

    async def watch():
        while True:
            message = await receive()
            if message['type'] == 'http.disconnect':
                with open(marker, 'w') as f:
                    f.write('disconnected')
                return
    watcher = asyncio.ensure_future(watch())
    while not watcher.done():
        await send({'type': 'http.response.body', 'body': b'tick\n', 'more_body': True})
        await asyncio.sleep(0.05)
