"""A minimal FastCGI responder (standard library only), for testing the
process upstream behind `transport fastcgi`: it listens on $PORT and
answers every request with its REQUEST_METHOD, REQUEST_URI and body length."""
import os
import socket
import struct
import threading

HEADER = struct.Struct('!BBHHBx')
BEGIN, END, PARAMS, STDIN, STDOUT = 1, 3, 4, 5, 6


def read_exact(conn, n):
    data = b''
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def records(conn):
    while True:
        version, kind, rid, length, padding = HEADER.unpack(read_exact(conn, HEADER.size))
        content = read_exact(conn, length) if length else b''
        if padding:
            read_exact(conn, padding)
        yield kind, rid, content


def pairs(data):
    out, i = {}, 0

    def length():
        nonlocal i
        if data[i] < 128:
            i += 1
            return data[i - 1]
        value = struct.unpack('!I', data[i:i + 4])[0] & 0x7FFFFFFF
        i += 4
        return value
    while i < len(data):
        n, v = length(), length()
        out[data[i:i + n].decode('latin-1')] = data[i + n:i + n + v].decode('latin-1')
        i += n + v
    return out


def record(kind, rid, content=b''):
    return HEADER.pack(1, kind, rid, len(content), 0) + content


def serve(conn):
    params, body = b'', b''
    with conn:
        try:
            for kind, rid, content in records(conn):
                if kind == PARAMS:
                    params += content
                elif kind == STDIN:
                    body += content
                    if not content:  # end of the request
                        env = pairs(params)
                        text = 'fastcgi %s %s %d\n' % (env.get('REQUEST_METHOD'), env.get('REQUEST_URI'), len(body))
                        out = ('Content-Type: text/plain\r\n\r\n' + text).encode()
                        conn.sendall(record(STDOUT, rid, out) + record(STDOUT, rid) +
                                     record(END, rid, struct.pack('!IB3x', 0, 0)))
                        params, body = b'', b''
        except EOFError:
            pass


def main():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(('127.0.0.1', int(os.environ['PORT'])))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == '__main__':
    main()
