"""Starlette WebSocket endpoints: echo (with a subprotocol), broadcast to
the worker's clients, a refusal, and a record of how each echo connection
ended (in $WS_LOG, one line per disconnect)."""
import os

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

clients = set()


def record(line):
    path = os.environ.get('WS_LOG')
    if path:
        with open(path, 'a') as f:
            f.write(line + '\n')


async def echo(ws):
    await ws.accept(subprotocol='echo.v1' if 'echo.v1' in ws.scope['subprotocols'] else None)
    while True:
        message = await ws.receive()
        if message['type'] == 'websocket.disconnect':
            record('disconnect %s' % message.get('code'))
            return
        if message.get('text') == 'close-me':
            await ws.close(code=4001, reason='asked to')
            return
        if message.get('text') == 'close-badly':  # a code no close frame may carry
            await ws.close(code=1006, reason='gone')
            return
        if message.get('text') == 'close-long':  # a reason past a close frame's room
            await ws.close(code=4003, reason='r' * 300)
            return
        if message.get('text') is not None:
            await ws.send_text('echo:' + message['text'])
        else:
            await ws.send_bytes(bytes(reversed(message['bytes'])))


async def broadcast(ws):
    await ws.accept()
    clients.add(ws)
    try:
        while True:
            text = await ws.receive_text()
            for client in list(clients):
                await client.send_text('all:' + text)
    except Exception:
        pass
    finally:
        clients.discard(ws)


async def refuse(ws):
    await ws.close(code=1008)


async def proxy_headers(ws):
    """Sends the names of the proxy headers the opening carried, then closes."""
    await ws.accept()
    names = sorted(k.decode() for k, _ in ws.scope['headers'] if k.startswith((b'x-forwarded', b'forwarded', b'x-real-ip')))
    await ws.send_text(' '.join(names))
    await ws.close()


app = Starlette(routes=[WebSocketRoute('/echo', echo), WebSocketRoute('/broadcast', broadcast),
                        WebSocketRoute('/refuse', refuse), WebSocketRoute('/proxy-headers', proxy_headers)])
