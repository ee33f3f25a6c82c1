"""Tries what app code could take from the session Caddy was started in: its
controlling terminal and its session keyring.

- WSGI (sessionprobe:application) answers the JSON of report(): "tty" is
  "opened" or the error opening /dev/tty raised; "pushed" is "yes" when
  TIOCSTI pushed ?push=<text> into the terminal's input, as if typed at
  the keyboard (into the shell of whoever started Caddy); "key" is the
  payload of the key ?key=<description> found through the session keyring,
  or the error looking for it raised;
- `python sessionprobe.py report <description>`: prints the same for a
  command (`caddy hearth exec`), pushing nothing;
- `python sessionprobe.py keyring <description> <secret> <command...>`:
  starts command (exec) with a new session keyring holding a user key, as
  a login's keyring would hold a Kerberos ticket.
"""
import ctypes
import errno
import fcntl
import json
import os
import sys
import termios
from urllib.parse import parse_qs

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_ADD_KEY, SYS_KEYCTL = 248, 250  # x86_64
KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_SEARCH, KEYCTL_READ = 1, 10, 11
KEY_SPEC_SESSION_KEYRING = ctypes.c_long(-3)


def error_name(number):
    return errno.errorcode.get(number, str(number))


def tty(text):
    try:
        fd = os.open('/dev/tty', os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        return error_name(e.errno), 'no terminal'
    try:
        for ch in text.encode():
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([ch]))
        return 'opened', 'yes'
    except OSError as e:
        return 'opened', error_name(e.errno)
    finally:
        os.close(fd)


def key(description):
    found = libc.syscall(SYS_KEYCTL, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, b'user', description.encode(), 0)
    if found < 0:
        return error_name(ctypes.get_errno())
    buf = ctypes.create_string_buffer(256)
    n = libc.syscall(SYS_KEYCTL, KEYCTL_READ, ctypes.c_long(found), buf, 256)
    if n < 0:
        return error_name(ctypes.get_errno())
    return buf.raw[:n].decode(errors='replace')


def report(push, description):
    opened, pushed = tty(push) if push else ('not tried', 'not tried')
    return {'pid': os.getpid(), 'uid': os.getuid(), 'tty': opened, 'pushed': pushed, 'key': key(description)}


def application(environ, start_response):
    query = parse_qs(environ.get('QUERY_STRING', ''))
    body = json.dumps(report(query.get('push', ['x'])[0], query.get('key', ['none'])[0])).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]


if __name__ == '__main__':
    if sys.argv[1] == 'report':
        print(json.dumps(report('', sys.argv[2])))
    elif sys.argv[1] == 'keyring':
        description, secret, command = sys.argv[2], sys.argv[3].encode(), sys.argv[4:]
        if libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
            sys.exit('joining a new session keyring: ' + error_name(ctypes.get_errno()))
        if libc.syscall(SYS_ADD_KEY, b'user', description.encode(), secret, len(secret), KEY_SPEC_SESSION_KEYRING) < 0:
            sys.exit('adding the key: ' + error_name(ctypes.get_errno()))
        os.execv(command[0], command)
