"""Reads the body with readline() and iteration, as form parsers do."""
import json
from wsgiref.validate import validator


def lines(environ, start_response):
    stream = environ['wsgi.input']
    first = stream.readline()
    second = stream.readline(4)
    rest = [line for line in stream]
    body = json.dumps({'first': first.decode(), 'second': second.decode(),
                       'rest': [l.decode() for l in rest]}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]


application = validator(lines)
