"""SSRF probe: on each request, tries to read Caddy's config and to load
one through every admin endpoint it can find (the TCP address in
ADMIN_PROBE_TCP, the unix sockets in ADMIN_PROBE_UNIX, colon-separated),
and answers with what it reached, as JSON, plus its uid and capabilities."""

import json
import os
import socket

# a body Caddy refuses (400) without changing anything: an answer at all
# shows the endpoint would take a real config
LOAD = b'{"admin": 1}'


def _request(sock, host, method, path, body=b""):
    head = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, path, host)
    if body:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    sock.sendall(head.encode() + b"\r\n" + body)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def _try(connect, host, method, path, body=b""):
    try:
        sock = connect()
        sock.settimeout(5)
        try:
            return _request(sock, host, method, path, body)
        finally:
            sock.close()
    except OSError as e:
        return "error: %s" % e.strerror


def _endpoints():
    tcp = os.environ.get("ADMIN_PROBE_TCP", "")
    if tcp:
        host, port = tcp.rsplit(":", 1)
        yield "tcp " + tcp, tcp, lambda: socket.create_connection((host, int(port)), timeout=5)
    for path in filter(None, os.environ.get("ADMIN_PROBE_UNIX", "").split(":")):
        def connect(path=path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
            except OSError:
                s.close()
                raise
            return s
        yield "unix " + path, "127.0.0.1", connect


def application(environ, start_response):
    out = {"uid": os.getuid(), "caps": {}, "reached": {}}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Cap"):
                key, value = line.split(":", 1)
                out["caps"][key] = value.strip()
    for name, host, connect in _endpoints():
        out["reached"][name] = {
            "GET /config/": _try(connect, host, "GET", "/config/"),
            "POST /load": _try(connect, host, "POST", "/load", LOAD),
        }
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
