"""Takes 30 seconds to import: longer than any test's start_timeout."""
import time

time.sleep(30)


def application(environ, start_response):
    start_response('200 OK', [])
    return [b'too late']
