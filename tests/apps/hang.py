"""/hang sleeps far longer than any timeout (in a function whose name the
stack dump must show); /slow?S sleeps S seconds; anything else is quick."""
import os
import time


def sleep_forever_on_purpose():
    time.sleep(3600)


def application(environ, start_response):
    path = environ['PATH_INFO']
    if path.endswith('/hang'):
        sleep_forever_on_purpose()
    elif path.endswith('/slow'):
        time.sleep(float(environ['QUERY_STRING']))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(os.getpid()).encode()]
