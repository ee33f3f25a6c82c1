"""`python3 -m uvicorn …` with one fix, for tests/bench/run.sh's uvicorn-nodelay peer.

With `--workers N` uvicorn binds the listening TCP socket itself with proto 0
(`socket.socket(family=family)`); accepted sockets inherit that, and asyncio
only sets TCP_NODELAY on sockets whose proto is IPPROTO_TCP. Nagle's algorithm
then holds the second write of each response (uvicorn writes head and body
separately) until the client's delayed ACK: ~40 ms per keep-alive request on
Linux (https://github.com/Kludex/uvicorn/issues/3149). This wraps the listener's
descriptor in a socket object that reports its real protocol; the workers get it
through multiprocessing, which keeps family, type and proto. Nothing else changes.

    python3 uvicorn_nodelay.py <the arguments of python3 -m uvicorn>
"""

import socket

import uvicorn.config
import uvicorn.main

_bind_socket = uvicorn.config.Config.bind_socket


def bind_socket(self):
    sock = _bind_socket(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
        # family, type and proto are read back from the descriptor itself.
        sock = socket.socket(fileno=sock.detach())
    return sock


uvicorn.config.Config.bind_socket = bind_socket

if __name__ == '__main__':
    uvicorn.main.main(prog_name='uvicorn')
