"""Tries what app code could take from the session Caddy was started in, or
from how it was started: its controlling terminal, its session keyring,
its CPU and I/O priority, its personality flags.

- WSGI (sessionprobe:application) answers the JSON of report(): "tty" is
  "opened" or the error opening /dev/tty raised; "pushed" is "yes" when
  TIOCSTI pushed ?push=<text> into the terminal's input, as if typed at
  the keyboard (into the shell of whoever started Caddy); "key" is the
  payload of the key ?key=<description> found through the session keyring,
  or the error looking for it raised (?add=<description> first adds a key
  of its own there); "nice", "policy" (os.SCHED_*),
  "io_class" (1: real-time), "personality", "oom_score_adj", and the
  blocked and ignored signals ("sig_blocked", "sig_ignored": bit n-1 is
  signal n) are the process's own;
- `python sessionprobe.py report <description>`: prints the same for a
  command (`caddy hearth exec`), pushing nothing;
- `python sessionprobe.py linger <file>` (a command of `caddy hearth exec`):
  prints a line and ends at once, leaving behind a process of its own
  session that waits until it is gone, then reads what is typed next on
  the command's standard input and writes it to file;
- `python sessionprobe.py login <report> <description> <secret> <command...>`:
  starts command (exec) with, as far as it is allowed to (a container's
  system call filter may refuse some), a new session keyring holding a
  user key, as a login's keyring would hold a Kerberos ticket, nice -5, the
  real-time policies for the CPU (SCHED_FIFO) and for I/O, the
  personality flag ADDR_NO_RANDOMIZE, an oom_score_adj of -500, and
  SIGTERM, SIGUSR1 and SIGHUP blocked (SIGTERM also ignored); writes to
  report (JSON) whether the key is there.
"""
import ctypes
import errno
import fcntl
import json
import os
import sys
import termios
import time
from urllib.parse import parse_qs

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_ADD_KEY, SYS_KEYCTL, SYS_IOPRIO_GET, SYS_IOPRIO_SET, SYS_PERSONALITY = 248, 250, 252, 251, 135  # x86_64
IOPRIO_WHO_PROCESS, IOPRIO_CLASS_RT = 1, 1
ADDR_NO_RANDOMIZE = 0x0040000
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


def io_class():
    value = libc.syscall(SYS_IOPRIO_GET, IOPRIO_WHO_PROCESS, 0)
    return value >> 13 if value >= 0 else 'error ' + error_name(ctypes.get_errno())


def status(name):
    """A field of /proc/self/status, a hexadecimal signal set as an int."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(name + ':'):
                return int(line.split()[1], 16)
    return -1


def oom_score_adj():
    with open('/proc/self/oom_score_adj') as f:
        return int(f.read())


def report(push, description):
    opened, pushed = tty(push) if push else ('not tried', 'not tried')
    return {'pid': os.getpid(), 'uid': os.getuid(), 'tty': opened, 'pushed': pushed, 'key': key(description),
            'nice': os.getpriority(os.PRIO_PROCESS, 0), 'policy': os.sched_getscheduler(0),
            'io_class': io_class(),
            'personality': libc.syscall(SYS_PERSONALITY, ctypes.c_ulong(0xffffffff)),
            'oom_score_adj': oom_score_adj(), 'sig_blocked': status('SigBlk'), 'sig_ignored': status('SigIgn')}


def application(environ, start_response):
    query = parse_qs(environ.get('QUERY_STRING', ''))
    if 'add' in query:  # a key of this app's, in its session keyring
        payload = b'this app\'s key'
        libc.syscall(SYS_ADD_KEY, b'user', query['add'][0].encode(), payload, len(payload), KEY_SPEC_SESSION_KEYRING)
    body = json.dumps(report(query.get('push', ['x'])[0], query.get('key', ['none'])[0])).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]


if __name__ == '__main__':
    if sys.argv[1] == 'report':
        print(json.dumps(report('', sys.argv[2])))
    elif sys.argv[1] == 'linger':
        loot, parent = sys.argv[2], os.getpid()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                with open(loot, 'a') as f:
                    f.write('left behind: pid %d\n' % os.getpid())
                for _ in range(100):  # until the command is gone (<= 5 s)
                    try:
                        os.kill(parent, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.05)
                import select
                try:
                    ready, _, _ = select.select([0], [], [], 5)
                    got = os.read(0, 200) if ready else b'(nothing within 5 s)'
                except OSError as e:
                    got = ('(' + error_name(e.errno) + ')').encode()
                with open(loot, 'a') as f:
                    f.write('read: %r\n' % got)
            os._exit(0)
        print('hello from the command', flush=True)
    elif sys.argv[1] == 'login':
        out, description, secret, command = sys.argv[2], sys.argv[3], sys.argv[4].encode(), sys.argv[5:]
        keyring = 'yes'
        if libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
            keyring = 'joining a new session keyring: ' + error_name(ctypes.get_errno())
        elif libc.syscall(SYS_ADD_KEY, b'user', description.encode(), secret, len(secret), KEY_SPEC_SESSION_KEYRING) < 0:
            keyring = 'adding the key: ' + error_name(ctypes.get_errno())
        with open(out, 'w') as f:
            json.dump({'keyring': keyring}, f)

        def protect():
            with open('/proc/self/oom_score_adj', 'w') as f:
                f.write('-500')

        import signal
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP})
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for attempt in (lambda: os.setpriority(os.PRIO_PROCESS, 0, -5),
                        lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)), protect):
            try:
                attempt()
            except OSError:
                pass  # not allowed here: the test checks what Caddy got
        libc.syscall(SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, 0, (IOPRIO_CLASS_RT << 13) | 4)
        libc.syscall(SYS_PERSONALITY, ctypes.c_ulong(ADDR_NO_RANDOMIZE))
        os.execv(command[0], command)
