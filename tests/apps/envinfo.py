"""Reports the worker's process environment: interpreter, prefix (venv),
working directory, sys.path head and selected environment variables."""
import json
import os
import sys


def application(environ, start_response):
    names = environ.get('QUERY_STRING', '').split(',')
    body = json.dumps({
        'executable': sys.executable,
        'prefix': sys.prefix,
        'cwd': os.getcwd(),
        'path0': sys.path[0],
        'env': {n: os.environ.get(n) for n in names if n},
    }).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
