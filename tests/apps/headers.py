"""Sets headers the guard must respect or remove, and serves everything
else (so refused paths prove the guard stopped them, not the app)."""
import os


def application(environ, start_response):
    path = environ['PATH_INFO']
    headers = [('Content-Type', 'text/plain'), ('Server', 'gunicorn/20.1.0'), ('X-Powered-By', 'Python')]
    if path == '/framed':
        headers.append(('X-Frame-Options', 'ALLOW-FROM https://partner.example'))
        headers.append(('Referrer-Policy', 'no-referrer'))
    if path == '/big-error':
        start_response('404 Not Found', headers)
        return [b'x' * (600 << 10)]
    if path == '/plain-error':
        start_response('404 Not Found', headers)
        return [b'no such page\n']
    start_response('200 OK', headers)
    return [('served %s by %d\n' % (path, os.getpid())).encode()]
