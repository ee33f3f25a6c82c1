"""Proves concurrency without timing: /meet?n=N returns only once N requests
are inside the same worker process at once (a threading.Barrier), and says
which process served it; requests that cannot meet fail with 500.
/sleep?S holds a thread for S seconds; anything else returns the pid."""
import os
import threading
import time
from urllib.parse import parse_qs

_barriers = {}
_lock = threading.Lock()


def application(environ, start_response):
    query = parse_qs(environ.get('QUERY_STRING', ''))
    if environ['PATH_INFO'] == '/meet':
        n = int(query['n'][0])
        with _lock:
            barrier = _barriers.setdefault(n, threading.Barrier(n))
        barrier.wait(timeout=10)
    elif environ['PATH_INFO'] == '/sleep':
        time.sleep(float(environ['QUERY_STRING']))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(os.getpid()).encode()]
