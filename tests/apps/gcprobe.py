"""Says how the worker that serves runs: how many objects the cyclic
collector leaves alone (gc.freeze) and how many it tracks, and the
scheduling policy (os.SCHED_*) of the worker and of a thread it starts,
and the HEARTH_ variables left in its environment (none should be)."""
import gc
import json
import os
import threading

IMPORTED = [[i] for i in range(1000)]  # lists: always tracked by the collector


def report():
    policies = []
    thread = threading.Thread(target=lambda: policies.append(os.sched_getscheduler(0)))
    thread.start()
    thread.join()
    return json.dumps({'pid': os.getpid(), 'frozen': gc.get_freeze_count(), 'tracked': len(gc.get_objects()),
                       'policy': os.sched_getscheduler(0), 'thread_policy': policies[0],
                       'hearth_env': sorted(k for k in os.environ if k.startswith('HEARTH_'))}).encode()


def application(environ, start_response):
    body = report()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]


async def app(scope, receive, send):
    if scope['type'] != 'http':
        return
    body = report()
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'application/json')]})
    await send({'type': 'http.response.body', 'body': body})
