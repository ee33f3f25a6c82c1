"""Says which process imported it and which serves: under preload the
import happens once, in the template, and workers are forked from it.
/wait?for=<path> writes <path>.started, then answers once <path> exists
(at most 60 s)."""
import json
import os
import time
from urllib.parse import parse_qs

IMPORTED_IN = os.getpid()
VERSION = 1


def application(environ, start_response):
    if environ['PATH_INFO'] == '/wait':
        path = parse_qs(environ['QUERY_STRING'])['for'][0]
        with open(path + '.started', 'w'):
            pass
        for _ in range(600):
            if os.path.exists(path):
                break
            time.sleep(0.1)
    body = json.dumps({'pid': os.getpid(), 'ppid': os.getppid(), 'imported_in': IMPORTED_IN,
                       'pgid': os.getpgid(0), 'version': VERSION}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
