"""Echoes the request: its WSGI environ and a digest of its body, as JSON.

Wrapped in wsgiref.validate.validator with its warnings turned into errors,
so any PEP 3333 violation by the server becomes a 500 the tests see.
"""
import hashlib
import json
import os
import warnings
from wsgiref.validate import validator, WSGIWarning

warnings.simplefilter('error', WSGIWarning)


def echo(environ, start_response):
    digest = hashlib.sha256()
    size = 0
    stream = environ['wsgi.input']
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    environ['wsgi.errors'].write('echo saw %s %s\n' % (environ['REQUEST_METHOD'], environ['PATH_INFO']))
    body = json.dumps({
        'environ': {k: v for k, v in environ.items() if isinstance(v, str)},
        'multithread': environ['wsgi.multithread'],
        'multiprocess': environ['wsgi.multiprocess'],
        'body_sha256': digest.hexdigest(),
        'body_size': size,
        'pid': os.getpid(),
    }).encode()
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]


application = validator(echo)
