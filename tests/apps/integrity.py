"""Request and response integrity (issue 13): echoes what the app was told
(the WSGI environ, or the ASGI scope), and reflects the `name` query
parameter into a Content-Disposition header, as a download view does.
Every request it sees is logged as "integrity app saw <path>"."""
import json
import os
import sys
from urllib.parse import parse_qs


def reflected(query):
    return parse_qs(query, encoding='latin-1').get('name', [''])[0]


def application(environ, start_response):
    path = environ['PATH_INFO']
    sys.stderr.write('integrity app saw %r\n' % path)
    if path == '/reflect':
        name = reflected(environ['QUERY_STRING'])
        start_response('200 OK', [('Content-Type', 'text/plain'),
                                  ('Content-Disposition', 'attachment; filename="%s"' % name)])
        return [b'file\n']
    body = json.dumps({'environ': {k: v for k, v in environ.items() if isinstance(v, str)},
                       'pid': os.getpid()}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]


async def asgi(scope, receive, send):
    if scope['type'] != 'http':
        return
    await receive()
    sys.stderr.write('integrity app saw %r\n' % scope['path'])
    if scope['path'] == '/reflect':
        name = reflected(scope['query_string'].decode('latin-1'))
        await send({'type': 'http.response.start', 'status': 200, 'headers': [
            (b'content-type', b'text/plain'),
            (b'content-disposition', ('attachment; filename="%s"' % name).encode('latin-1'))]})
        await send({'type': 'http.response.body', 'body': b'file\n'})
        return
    out = {k: scope[k] for k in ('client', 'server', 'scheme', 'root_path', 'path', 'http_version')}
    out['headers'] = [[k.decode('latin-1'), v.decode('latin-1')] for k, v in scope['headers']]
    out['query_string'] = scope['query_string'].decode('latin-1')
    out['pid'] = os.getpid()
    body = json.dumps(out).encode()
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'application/json')]})
    await send({'type': 'http.response.body', 'body': body})
