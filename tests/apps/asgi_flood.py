"""An ASGI app that does not take what its clients send: the WebSocket
/deaf accepts and then only sends a tick every 0.2 s, never receiving
(it writes how it ended to $FLOOD_LOG); the WebSocket /leaver returns
right after accepting, leaving a task that keeps sending; GET /after
receives after its response is complete; POST /unread never reads its
body and answers, after 3 s, how much the worker's resident memory grew
meanwhile (kB); anything else says hello with the worker's pid."""
import asyncio
import os

from asgi_lifespan import serve_lifespan


leftover = set()  # tasks an endpoint left running


def rss_kb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        return await serve_lifespan(receive, send)
    if scope['type'] == 'websocket' and scope['path'] == '/leaver':
        # accepts, leaves a task behind that keeps sending, and returns
        await receive()  # connect
        await send({'type': 'websocket.accept'})

        async def keep_sending():
            try:
                for i in range(40):
                    await asyncio.sleep(0 if i < 5 else 0.05)  # at once, then on and on
                    await send({'type': 'websocket.send', 'text': 'late'})
            except OSError as exc:
                with open(os.environ['FLOOD_LOG'], 'a') as f:
                    f.write('late send raised %s\n' % type(exc).__name__)
        leftover.add(asyncio.ensure_future(keep_sending()))
        return
    if scope['type'] == 'websocket':
        await receive()  # connect
        await send({'type': 'websocket.accept'})
        try:
            while True:
                await asyncio.sleep(0.2)
                await send({'type': 'websocket.send', 'text': 'tick'})
        except OSError as exc:
            with open(os.environ['FLOOD_LOG'], 'a') as f:
                f.write('send raised %s\n' % type(exc).__name__)
        # the messages that came before the close, then the close
        message = await receive()
        while message['type'] == 'websocket.receive':
            message = await receive()
        with open(os.environ['FLOOD_LOG'], 'a') as f:
            f.write('received %s %s\n' % (message['type'], message.get('code')))
        return
    if scope['path'] == '/after':
        # a complete response, then a receive (a task that waits for the
        # client to leave): it must learn at once that nothing more comes
        await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
        await send({'type': 'http.response.body', 'body': b'done'})
        try:
            message = await asyncio.wait_for(receive(), 5)
            got = message['type']
        except asyncio.TimeoutError:
            got = 'nothing within 5 s'
        with open(os.environ['FLOOD_LOG'], 'a') as f:
            f.write('after the response, receive: %s\n' % got)
        return
    if scope['path'] == '/unread':
        before = rss_kb()
        await asyncio.sleep(3)
        grown = rss_kb() - before
        await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
        await send({'type': 'http.response.body', 'body': b'%d' % grown})
        return
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
    await send({'type': 'http.response.body', 'body': ('hello from %d\n' % os.getpid()).encode()})
