"""Says which process imported it and which serves: under preload the
import happens once, in the template, and workers are forked from it."""
import json
import os

IMPORTED_IN = os.getpid()
VERSION = 1


def application(environ, start_response):
    body = json.dumps({'pid': os.getpid(), 'ppid': os.getppid(), 'imported_in': IMPORTED_IN,
                       'pgid': os.getpgid(0), 'version': VERSION}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
