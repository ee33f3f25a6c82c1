"""Leaks memory on purpose: every request keeps another 4 MiB alive."""
import os

_kept = []


def application(environ, start_response):
    _kept.append(bytearray(4 << 20))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('%d %d\n' % (os.getpid(), len(_kept))).encode()]
