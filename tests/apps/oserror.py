"""An app whose own code raises OSError (a missing file, a refused
connection): the app's error, not a lost connection to Caddy.

/before raises before the response, /midway after its first chunk,
anything else says hello with the worker's pid. `application` is WSGI,
`app` is ASGI.
"""
import os

from asgi_lifespan import serve_lifespan


def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/before':
        raise FileNotFoundError(2, 'No such file or directory', '/srv/missing-template.html')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    if path == '/midway':
        def body():
            yield b'first part\n'
            raise ConnectionRefusedError(111, 'Connection refused (the database)')
        return body()
    return [('hello from %d\n' % os.getpid()).encode()]


async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        return await serve_lifespan(receive, send)
    path = scope['path']
    if path == '/before':
        raise FileNotFoundError(2, 'No such file or directory', '/srv/missing-template.html')
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
    if path == '/midway':
        await send({'type': 'http.response.body', 'body': b'first part\n', 'more_body': True})
        raise ConnectionRefusedError(111, 'Connection refused (the database)')
    await send({'type': 'http.response.body', 'body': ('hello from %d\n' % os.getpid()).encode()})
