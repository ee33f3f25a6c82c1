"""Streams: a generator that waits between chunks, and the write() callable.

GET /gen?n=5&delay=0.2 yields n chunks, delay seconds apart.
GET /write uses the legacy write() callable before returning more.
GET /headers-first?marker=PATH calls write(b'') (PEP 3333: the headers go out
now), waits up to 60 s for the file PATH to exist, then returns "after".
GET /big?mb=50 yields mb chunks of 1 MiB (a large response; &chunked=1: without
a Content-Length).
"""
import os
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator


def stream(environ, start_response):
    query = parse_qs(environ.get('QUERY_STRING', ''))
    path = environ['PATH_INFO']
    if path == '/write':
        write = start_response('200 OK', [('Content-Type', 'text/plain')])
        write(b'written-1\n')
        write(b'written-2\n')
        return [b'returned\n']
    if path == '/headers-first':
        write = start_response('200 OK', [('Content-Type', 'text/plain')])
        write(b'')
        marker = query['marker'][0]
        for _ in range(1200):
            if os.path.exists(marker):
                break
            time.sleep(0.05)
        return [b'after\n']
    if path == '/big':
        mb = int(query.get('mb', ['50'])[0])
        headers = [('Content-Type', 'application/octet-stream')]
        if 'chunked' not in query:
            headers.append(('Content-Length', str(mb << 20)))
        start_response('200 OK', headers)
        chunk = bytes(range(256)) * 4096
        return (chunk for _ in range(mb))
    n = int(query.get('n', ['5'])[0])
    delay = float(query.get('delay', ['0.2'])[0])
    start_response('200 OK', [('Content-Type', 'text/plain')])

    def chunks():
        for i in range(n):
            yield ('chunk %d %.3f\n' % (i, time.time())).encode()
            if i < n - 1:
                time.sleep(delay)
    return chunks()


application = validator(stream)
