"""For the pipelining tests. /id?X answers "X <pid>"; /wait blocks until
the file named by PIPELINE_GATE exists; POST /exit dies mid-request;
POST /record appends its body (one line) to PIPELINE_RECORD and echoes it;
/hang sleeps 20 s (past the test's timeout: Caddy ends the worker);
/slow takes 5 ms."""
import os
import time


def application(environ, start_response):
    path = environ['PATH_INFO']
    body = str(os.getpid()).encode()
    if path == '/id':
        body = ('%s %d' % (environ['QUERY_STRING'], os.getpid())).encode()
    elif path == '/wait':
        deadline = time.monotonic() + 10
        while not os.path.exists(os.environ['PIPELINE_GATE']) and time.monotonic() < deadline:
            time.sleep(0.002)
    elif path == '/slow':
        time.sleep(0.005)
    elif path == '/exit':
        time.sleep(0.05)
        os._exit(1)
    elif path == '/record':
        size = int(environ.get('CONTENT_LENGTH') or 0)
        body = environ['wsgi.input'].read(size)
        with open(os.environ['PIPELINE_RECORD'], 'ab') as f:
            f.write(body + b'\n')
    elif path == '/hang':
        time.sleep(20)
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
