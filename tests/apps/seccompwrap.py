"""Starts a command under a seccomp filter that refuses some system calls,
as systemd's filters do (x86_64; on another architecture the filter allows
everything, and the tests that use it say so). By default it refuses
sched_setscheduler with EPERM, as SystemCallFilter=~@resources does;
SECCOMPWRAP_REFUSE names others, as name:errno pairs separated by commas
(openat2:ENOSYS is what RestrictSUIDSGID= does).

    [SECCOMPWRAP_REFUSE=openat2:ENOSYS] python seccompwrap.py <command...>
"""
import ctypes
import errno
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7fff0000, 0x00050000
AUDIT_ARCH_X86_64 = 0xc000003e
SYSCALLS = {'sched_setscheduler': 144, 'openat2': 437}  # x86_64


class SockFprog(ctypes.Structure):
    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_char_p)]


def insn(code, jt, jf, k):
    return struct.pack('HBBI', code, jt, jf, k)


refuse = []
for pair in os.environ.pop('SECCOMPWRAP_REFUSE', 'sched_setscheduler:EPERM').split(','):
    name, _, err = pair.partition(':')
    if name not in SYSCALLS or not hasattr(errno, err):
        sys.exit(f'seccompwrap: cannot refuse {pair!r}: name one of {sorted(SYSCALLS)} and an errno name')
    refuse.append((SYSCALLS[name], getattr(errno, err)))
program = [
    insn(BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
    insn(BPF_JEQ_K, 0, 2 * len(refuse) + 1, AUDIT_ARCH_X86_64),
    insn(BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
]
for nr, err in refuse:
    program += [insn(BPF_JEQ_K, 0, 1, nr), insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err)]
program = b''.join(program + [insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)])
libc = ctypes.CDLL(None, use_errno=True)
prog = SockFprog(len(program) // 8, program)
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
        libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
    sys.exit('seccompwrap: installing the filter: ' + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
