"""Two services for the order Caddy stops them in at its exit:

    python stoporder.py listen <port>       serves connections on <port> until SIGTERM
    python stoporder.py needs <port> <out> <ready>
                                            on SIGTERM, writes to <out> whether
                                            <port> still answered ("up"/"down");
                                            listens on <ready> once it can
                                            (its SIGTERM handler set)
"""
import signal
import socket
import sys
import time


def on_term(*_):
    raise SystemExit(0)


mode, port = sys.argv[1], int(sys.argv[2])
if mode == 'listen':
    signal.signal(signal.SIGTERM, on_term)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', port))
    s.listen(16)
    while True:
        s.accept()[0].close()
else:
    def on_term_needs(*_):
        time.sleep(0.5)  # still working: a task finishing, which needs the other service
        try:
            socket.create_connection(('127.0.0.1', port), timeout=2).close()
            state = 'up'
        except OSError:
            state = 'down'
        with open(sys.argv[3], 'w') as f:
            f.write(state)
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term_needs)
    ready = socket.socket()
    ready.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ready.bind(('127.0.0.1', int(sys.argv[4])))
    ready.listen(16)
    while True:
        ready.accept()[0].close()
