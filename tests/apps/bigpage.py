"""A page of ?kib= KiB (at most 4096) sent without reading the request body,
as a view that ignores a body does: the server must take the answer while
it still has the body to send. &status= sets its status (200 by default;
a 404 is what a project's own large error page looks like)."""
from urllib.parse import parse_qs


def application(environ, start_response):
    query = parse_qs(environ.get('QUERY_STRING', ''))
    kib = query.get('kib', ['1'])[0]
    kib = int(kib) if kib.isdigit() else 1
    status = query.get('status', ['200'])[0]
    status = int(status) if status.isdigit() and 200 <= int(status) <= 599 else 200
    body = b'x' * (min(kib, 4096) << 10)
    start_response('%d Page' % status, [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
