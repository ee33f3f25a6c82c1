"""Small process helpers for tests/bench/run.sh (stdlib only, Linux /proc).

    procs.py freeport            a loopback TCP port nobody listens on now
    procs.py tree PID...         the PIDs given and all their descendants
    procs.py snapshot PID...     JSON: CPU ticks of those trees and of the machine
    procs.py busy SECONDS        % of the machine's CPU time not idle over SECONDS
    procs.py memwatch FILE PID...
                                 until SIGTERM: every 0.25 s, the summed RSS and
                                 PSS (kB) of those trees; FILE gets the peaks
"""

import json
import os
import socket
import sys
import time


def freeport():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _stat(pid):
    """(ppid, comm, utime+stime ticks) of a process, or None if it is gone."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as f:
            raw = f.read().decode('utf-8', 'replace')
    except OSError:
        return None
    # comm is in parentheses and may itself contain spaces or parentheses.
    lpar, rpar = raw.index('('), raw.rindex(')')
    comm = raw[lpar + 1:rpar]
    fields = raw[rpar + 2:].split()
    # fields[0] is state (field 3); ppid is field 4, utime 14, stime 15.
    return int(fields[1]), comm, int(fields[11]) + int(fields[12])


def tree(roots):
    """{pid: (comm, ticks)} for the roots and every descendant."""
    table = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            st = _stat(int(name))
            if st:
                table[int(name)] = st
    children = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out[pid] = (table[pid][1], table[pid][2])
        todo.extend(children.get(pid, ()))
    return out


def memory_kb(pid):
    """(RSS, PSS) of a process in kB from smaps_rollup, or None if it is gone."""
    rss = pss = None
    try:
        with open(f'/proc/{pid}/smaps_rollup') as f:
            for line in f:
                if line.startswith('Rss:'):
                    rss = int(line.split()[1])
                elif line.startswith('Pss:'):
                    pss = int(line.split()[1])
    except OSError:
        return None
    return (rss, pss) if rss is not None and pss is not None else None


def memwatch(path, roots):
    """Samples the trees' summed RSS and PSS until SIGTERM, then writes the
    peaks (and the process count at the RSS peak) to path as JSON."""
    import signal
    peak = {'rss_kb': 0, 'pss_kb': 0, 'processes': 0, 'samples': 0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop:
        rss = pss = n = 0
        for pid in tree(roots):
            m = memory_kb(pid)
            if m:
                rss, pss, n = rss + m[0], pss + m[1], n + 1
        if rss > peak['rss_kb']:
            peak['rss_kb'], peak['processes'] = rss, n
        peak['pss_kb'] = max(peak['pss_kb'], pss)
        peak['samples'] += 1
        time.sleep(0.25)
    with open(path, 'w') as f:
        json.dump(peak, f)


def machine_ticks():
    """All CPUs' ticks: total, idle (with iowait), and charged to tasks
    (user + nice + system, without irq, softirq and steal)."""
    with open('/proc/stat') as f:
        first = f.readline().split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user/nice.
    total = sum(values[:8])
    tasks = values[0] + values[1] + values[2]
    return total, idle, tasks


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd = argv[0]
    if cmd == 'memwatch':
        memwatch(argv[1], [int(a) for a in argv[2:]])
        return
    args = [float(a) if '.' in a else int(a) for a in argv[1:]]
    if cmd == 'freeport':
        print(freeport())
    elif cmd == 'tree':
        print(' '.join(str(p) for p in sorted(tree(args))))
    elif cmd == 'busy':
        total0, idle0, _ = machine_ticks()
        time.sleep(args[0])
        total1, idle1, _ = machine_ticks()
        total = total1 - total0
        print(round(100 * (total - (idle1 - idle0)) / total) if total else 0)
    elif cmd == 'snapshot':
        total, idle, tasks = machine_ticks()
        procs = tree(args)
        print(json.dumps({
            'time': time.monotonic(),
            'hz': os.sysconf('SC_CLK_TCK'),
            'machine_total': total,
            'machine_idle': idle,
            'machine_tasks': tasks,
            'procs': {str(p): [c, t] for p, (c, t) in procs.items()},
        }))
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main(sys.argv[1:])
