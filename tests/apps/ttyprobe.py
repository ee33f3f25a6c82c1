"""Tries what app code could do with a controlling terminal: open /dev/tty
and push characters into its input with TIOCSTI, as if typed at the
keyboard (into the shell of whoever started Caddy, once Caddy is gone).

WSGI (ttyprobe:application) answers JSON: "tty" is "opened" or the error
opening /dev/tty raised, "pushed" is "yes" when TIOCSTI accepted the
characters, else the error; ?push=<text> names what to push.
"""
import errno
import fcntl
import json
import os
import termios
from urllib.parse import parse_qs


def probe(text):
    out = {'pid': os.getpid(), 'uid': os.getuid()}
    try:
        fd = os.open('/dev/tty', os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        out['tty'] = errno.errorcode.get(e.errno, str(e.errno))
        out['pushed'] = 'no terminal'
        return out
    out['tty'] = 'opened'
    try:
        for ch in text.encode():
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([ch]))
        out['pushed'] = 'yes'
    except OSError as e:
        out['pushed'] = errno.errorcode.get(e.errno, str(e.errno))
    finally:
        os.close(fd)
    return out


def application(environ, start_response):
    text = parse_qs(environ.get('QUERY_STRING', '')).get('push', ['x'])[0]
    body = json.dumps(probe(text)).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
