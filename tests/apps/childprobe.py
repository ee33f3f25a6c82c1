"""Reports what a process Hearth started was given: its whole environment,
its umask and its open file descriptors (with what they point to).

- as a WSGI app (childprobe:application): the report of the worker; with
  ?child, also the descriptors a subprocess of the app gets when it asks
  for every inheritable one (close_fds=False);
- `python childprobe.py write <path>` (a before_start command): writes the
  report to path, and creates <path>.created to show the umask at work;
- `python childprobe.py serve` (a process upstream): an HTTP server on $PORT
  (or the unix socket $HEARTH_SOCKET) answering the report of the server's
  process.
"""
import json
import os
import sys


def report():
    umask = None
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('Umask:'):
                umask = line.split()[1]
    names = os.listdir('/proc/self/fd')  # its own descriptor is closed on return
    fds = {}
    for name in names:
        try:
            fds[name] = os.readlink('/proc/self/fd/' + name)
        except OSError:
            pass  # listdir's own
    return {'pid': os.getpid(), 'env': dict(os.environ), 'umask': umask, 'fds': fds}


def application(environ, start_response):
    data = report()
    if environ.get('QUERY_STRING') == 'child':
        import subprocess
        out = subprocess.run([sys.executable, __file__, 'fds'], close_fds=False, stdout=subprocess.PIPE, check=True).stdout
        data['child_fds'] = json.loads(out)
    body = json.dumps(data).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]


def serve():
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(report()).encode()
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    if 'HEARTH_SOCKET' in os.environ:  # the `socket` option
        import socket

        class UnixServer(HTTPServer):
            address_family = socket.AF_UNIX

            def server_bind(self):
                self.socket.bind(self.server_address)

            def get_request(self):
                conn, _ = self.socket.accept()
                return conn, ('unix', 0)

        UnixServer(os.environ['HEARTH_SOCKET'], Handler).serve_forever()
    HTTPServer(('127.0.0.1', int(os.environ['PORT'])), Handler).serve_forever()


if __name__ == '__main__':
    if sys.argv[1] == 'write':
        data = report()
        with open(sys.argv[2] + '.created', 'w') as f:
            f.write('made by before_start\n')
        with open(sys.argv[2], 'w') as f:
            json.dump(data, f)
    elif sys.argv[1] == 'serve':
        serve()
    elif sys.argv[1] == 'fds':
        print(json.dumps(report()['fds']))
