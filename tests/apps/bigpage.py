"""A page of ?kib= KiB (at most 4096) sent without reading the request body,
as a view that ignores a body does: the server must take the answer while
it still has the body to send."""


def application(environ, start_response):
    query = environ.get('QUERY_STRING', '')
    kib = int(query[4:]) if query.startswith('kib=') and query[4:].isdigit() else 1
    body = b'x' * (min(kib, 4096) << 10)
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
