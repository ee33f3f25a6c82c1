"""Fails on purpose: /raise before the response, /midway after streaming
a first chunk, /str with a body of str, /slow sleeps (for load tests), /hold?PATH
waits up to 60 s for the file PATH to exist, /order sleeps 20 ms and answers
how many /order requests its worker has served (itself included: the order
the worker took them in), anything else says hello."""
import itertools
import os
import time
from urllib.parse import unquote_plus

ORDER = itertools.count(1)


class DeliberateFailure(Exception):
    pass


def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/raise':
        raise DeliberateFailure('the app failed on purpose (secret-marker-not-for-clients)')
    if path == '/midway':
        start_response('200 OK', [('Content-Type', 'text/plain')])

        def body():
            yield b'first part\n'
            raise DeliberateFailure('failed in the middle of the response')
        return body()
    if path == '/str':
        # a body of str, not bytes: the app's bug, before anything is sent
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return iter(['text, not bytes\n'])
    if path == '/slow':
        time.sleep(float(environ.get('QUERY_STRING') or '0.05'))
    if path == '/order':
        time.sleep(0.02)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'%d' % next(ORDER)]
    if path == '/hold':
        for _ in range(1200):
            if os.path.exists(unquote_plus(environ['QUERY_STRING'])):
                break
            time.sleep(0.05)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('hello from %d\n' % __import__('os').getpid()).encode()]
