"""Says how many objects the cyclic collector leaves alone (gc.freeze)
in the worker that serves, and how many it tracks."""
import gc
import json
import os

IMPORTED = [[i] for i in range(1000)]  # lists: always tracked by the collector


def application(environ, start_response):
    body = json.dumps({'pid': os.getpid(), 'frozen': gc.get_freeze_count(), 'tracked': len(gc.get_objects())}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]


async def app(scope, receive, send):
    if scope['type'] != 'http':
        return
    body = json.dumps({'pid': os.getpid(), 'frozen': gc.get_freeze_count(), 'tracked': len(gc.get_objects())}).encode()
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'application/json')]})
    await send({'type': 'http.response.body', 'body': body})
