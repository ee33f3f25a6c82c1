"""Starts a command under a seccomp filter that refuses sched_setscheduler
with EPERM, as systemd's SystemCallFilter=~@resources does (x86_64; on
another architecture the filter allows everything, and the test that uses
it says so).

    python seccompwrap.py <command...>
"""
import ctypes
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, EPERM = 0x7fff0000, 0x00050000, 1
AUDIT_ARCH_X86_64, SYS_SCHED_SETSCHEDULER = 0xc000003e, 144


class SockFprog(ctypes.Structure):
    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_char_p)]


def insn(code, jt, jf, k):
    return struct.pack('HBBI', code, jt, jf, k)


program = b''.join([
    insn(BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
    insn(BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
    insn(BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    insn(BPF_JEQ_K, 0, 1, SYS_SCHED_SETSCHEDULER),
    insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
    insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
])
libc = ctypes.CDLL(None, use_errno=True)
prog = SockFprog(len(program) // 8, program)
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
        libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
    sys.exit('seccompwrap: installing the filter: ' + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
