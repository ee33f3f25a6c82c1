"""Turns a tests/bench/run.sh run directory into results.md and results.png.

    /usr/bin/python3 tests/bench/report.py RUN_DIR RESULTS_MD RESULTS_PNG
    /usr/bin/python3 tests/bench/report.py --peak RUN_DIR APP
        the best median closed-loop req/s of the app's Python peers so far (run.sh
        sets the open-loop rates from it)
"""

import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

PEERS = {
    'hearth': 'Hearth (`{kind}`, 2 workers)',
    'hearth-base': 'Hearth, base build (`BENCH_BASE_CADDY`: the A/B of a change)',
    'hearth-2g': 'Hearth as on a 2 GiB board (`GOMEMLIMIT=1843MiB`: `caddy_gc_floor auto` gives 14 MiB)',
    'caddy-gunicorn': 'Caddy `reverse_proxy` → gunicorn (unix socket)',
    'gunicorn': 'gunicorn direct',
    'nginx-uwsgi': 'nginx `uwsgi_pass` → uWSGI (unix socket)',
    'caddy-uvicorn': 'Caddy `reverse_proxy` → uvicorn (unix socket)',
    'uvicorn': 'uvicorn direct (`--workers 2`: Nagle left on, see Method)',
    'uvicorn-nodelay': 'uvicorn direct with TCP_NODELAY (`uvicorn_nodelay.py`)',
    'caddy-respond': 'Caddy `respond` (ceiling, no Python)',
    'caddy-files': 'Caddy `file_server`, no Hearth in the config (Caddy\'s plain file system)',
    'nginx-static': 'nginx serving the files (`root`)',
}
SHORT = {
    'hearth': 'Hearth',
    'hearth-base': 'Hearth\n(base build)',
    'hearth-2g': 'Hearth\n(2 GiB board)',
    'caddy-gunicorn': 'Caddy→gunicorn',
    'gunicorn': 'gunicorn',
    'nginx-uwsgi': 'nginx→uWSGI',
    'caddy-uvicorn': 'Caddy→uvicorn',
    'uvicorn': 'uvicorn\n(Nagle on)',
    'uvicorn-nodelay': 'uvicorn+NODELAY',
    'caddy-respond': 'Caddy respond\n(ceiling)',
    'caddy-files': 'Caddy\nfile_server',
    'nginx-static': 'nginx\nstatic',
}
APPS = {
    'hello': '`tests/apps/hello.py` (hello world WSGI)',
    'django': '`tests/bench/djangoapp` (Django, default middleware, one plain view)',
    'asgi': '`tests/bench/asgi_hello.py` (hello world ASGI, no framework)',
    'static': 'a 2 KiB stylesheet, `/static/css/site.css`, served as a file (no Python)',
}
KIND = {'hello': 'wsgi', 'django': 'wsgi', 'asgi': 'asgi', 'static': 'file_server'}  # Hearth's directive per app
# Throughput: (peer, Hearth ÷ peer at least, apps), closed loop over plain HTTP.
TARGETS = [('caddy-gunicorn', 2.0, ('hello', 'django')), ('nginx-uwsgi', 1.25, ('hello', 'django')),
           ('caddy-uvicorn', 1.5, ('asgi',)), ('uvicorn-nodelay', 1.0, ('asgi',))]
# The other targets of issue 20, each checked against nginx → uWSGI (gunicorn for memory).
TLS_TARGET = 1.25          # HTTPS req/s ≥ 1.25× nginx (TLS) → uWSGI, HTTP/1.1 and HTTP/2
OPEN_P99_LOADS = (25, 50)  # p99 at these loads ≤ nginx → uWSGI's
SATURATED_P99 = 2.0        # closed-loop p99 ≤ 2× nginx → uWSGI's
RSS_TARGET = 1.5           # whole-stack peak RSS ≤ 1.5× gunicorn's
KINDS = {'closed': 'HTTP', 'tls-h1': 'HTTPS, HTTP/1.1 (wrk)', 'tls-h2': 'HTTPS, HTTP/2 (h2load, 16 connections × 4 streams)'}


def peer_label(peer, app):
    if app == 'static' and peer in ('hearth', 'hearth-base'):
        return PEERS[peer].replace('(`{kind}`, 2 workers)', '(`file_server` beside a Python app, as a Django site)')
    return PEERS[peer].replace('{kind}', KIND[app])

UNITS = {'us': 1e-3, 'ms': 1.0, 's': 1e3, 'm': 60e3, 'h': 3600e3}


def to_ms(text):
    m = re.fullmatch(r'([\d.]+)(us|ms|s|m|h)', text)
    if not m:
        raise ValueError(f'unknown wrk time {text!r}')
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(text):
    """Requests/s, p99 (ms), requests, non-2xx/3xx count, socket errors of one wrk run."""
    out = {'rps': None, 'p99': None, 'p50': None, 'requests': None, 'non2xx': 0,
           'socket_errors': {}, 'raw': text}
    m = re.search(r'^Requests/sec:\s+([\d.]+)', text, re.M)
    if m:
        out['rps'] = float(m.group(1))
    m = re.search(r'^\s+99%\s+(\S+)', text, re.M)
    if m:
        out['p99'] = to_ms(m.group(1))
    m = re.search(r'^\s+50%\s+(\S+)', text, re.M)
    if m:
        out['p50'] = to_ms(m.group(1))
    m = re.search(r'^\s+(\d+) requests in', text, re.M)
    if m:
        out['requests'] = int(m.group(1))
    m = re.search(r'Non-2xx or 3xx responses:\s+(\d+)', text)
    if m:
        out['non2xx'] = int(m.group(1))
    m = re.search(r'Socket errors:\s+(.*)', text)
    if m:
        for part in m.group(1).split(','):
            name, value = part.split()
            if int(value):
                out['socket_errors'][name] = int(value)
    return out


def parse_h2load(text, log_path):
    """The same fields as parse_wrk, from h2load's summary and its per-request log."""
    out = {'rps': None, 'p99': None, 'p50': None, 'requests': None, 'non2xx': 0,
           'socket_errors': {}, 'raw': text}
    m = re.search(r'^finished in [\d.]+\w*, ([\d.]+) req/s', text, re.M)
    if m:
        out['rps'] = float(m.group(1))
    m = re.search(r'^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, '
                  r'(\d+) errored, (\d+) timeout', text, re.M)
    if m:
        out['requests'] = int(m.group(3))
        for name, value in zip(('failed', 'errored', 'timeout'), m.groups()[3:]):
            if int(value):
                out['socket_errors'][name] = int(value)
    m = re.search(r'^status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx', text, re.M)
    if m:
        out['non2xx'] = int(m.group(1)) + int(m.group(2))
    try:
        durations = sorted(int(line.split('\t')[2]) for line in Path(log_path).read_text().splitlines()
                           if line.count('\t') >= 2)
    except (OSError, ValueError):
        durations = []
    if durations:
        out['p50'] = durations[len(durations) // 2] / 1e3
        out['p99'] = durations[min(len(durations) - 1, int(len(durations) * 0.99))] / 1e3
    return out


def read_rows(run_dir):
    """measurements.tsv's rows as (round, position, app, peer, dir, kind)."""
    rows = []
    for line in (Path(run_dir) / 'measurements.tsv').read_text().splitlines()[1:]:
        fields = line.split('\t')
        rows.append(tuple(fields) if len(fields) == 6 else tuple(fields) + ('closed',))
    return rows


def peak(run_dir, app):
    """The best median closed-loop req/s among the app's Python-serving peers."""
    by_peer = {}
    for rnd, pos, a, peer, d, kind in read_rows(run_dir):
        if kind == 'closed' and a == app and peer not in ('caddy-respond', 'hearth-base', 'hearth-2g'):
            rps = parse_wrk((Path(d) / 'wrk.txt').read_text(errors='replace'))['rps']
            by_peer.setdefault(peer, []).append(rps)
    best = max((median(v) or 0 for v in by_peer.values()), default=0)
    return int(best)


def memory(d):
    """Peak RSS and PSS (MB) of a measurement's servers, or (None, None)."""
    try:
        m = json.loads((Path(d) / 'memory.json').read_text())
    except (OSError, ValueError):
        return None, None
    return m['rss_kb'] / 1024, m['pss_kb'] / 1024


def open_results(d):
    """{load %: the generator's JSON result} of an open-loop measurement, each
    with the servers' CPU over the load added: front_pct and python_pct (% of
    one core), front_us and python_us (µs per request at the load's rate)."""
    out = {}
    for f in sorted(Path(d).glob('open-*.json')):
        try:
            load = int(f.stem.split('-')[1])
            r = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        by_comm, seconds, _ = cpu_split(Path(d) / f'cpu-before-{load}.json', Path(d) / f'cpu-after-{load}.json')
        if by_comm and seconds:
            by_comm.pop(None, None)
            front = sum(cpu for comm, (_, cpu) in by_comm.items() if comm in FRONTS)
            python = sum(cpu for comm, (_, cpu) in by_comm.items() if comm not in FRONTS)
            r['front_pct'], r['python_pct'] = front / seconds * 100, python / seconds * 100
            # The window also holds the warm-up at the same rate: requests ≈ rate × window.
            r['front_us'] = front / (r['target_rate'] * seconds) * 1e6
            r['python_us'] = python / (r['target_rate'] * seconds) * 1e6
        out[load] = r
    return out


FRONTS = {'caddy', 'nginx'}  # process names of the HTTP fronts; the rest run Python
OTHERS_LIMIT = 10  # % of one core used by other processes that marks a round as disturbed


def cpu_split(before_file, after_file):
    """CPU used over the measurement: {comm: (processes, cpu seconds)}, the
    window in seconds, and the whole machine's busy %."""
    try:
        before = json.loads(Path(before_file).read_text())
        after = json.loads(Path(after_file).read_text())
    except (OSError, ValueError):
        return None, None, None
    seconds = after['time'] - before['time']
    hz = after['hz']
    by_comm = {}
    for pid, (comm, ticks) in after['procs'].items():
        if pid not in before['procs']:
            continue
        used = (ticks - before['procs'][pid][1]) / hz
        n, cpu = by_comm.get(comm, (0, 0.0))
        by_comm[comm] = (n + 1, cpu + used)
    total = after['machine_total'] - before['machine_total']
    idle = after['machine_idle'] - before['machine_idle']
    busy = 100.0 * (total - idle) / total if total else None
    # CPU charged to all tasks on the machine (user+nice+system, all cores).
    tasks = after.get('machine_tasks', 0) - before.get('machine_tasks', 0)
    by_comm[None] = (0, tasks / hz)
    return by_comm, seconds, busy


def child_cpu_seconds(before_file, after_file):
    """CPU seconds (user+sys) of the children the shell reaped between two
    `times` outputs: here, wrk alone."""
    def parse(path):
        lines = Path(path).read_text().split('\n')
        total = 0.0
        for part in lines[1].split():
            m = re.fullmatch(r'(\d+)m([\d.]+)s', part)
            total += int(m.group(1)) * 60 + float(m.group(2))
        return total
    try:
        return parse(after_file) - parse(before_file)
    except (OSError, IndexError, AttributeError, ValueError):
        return None


def status_line(path):
    try:
        first = Path(path).read_text(errors='replace').splitlines()[0]
    except (OSError, IndexError):
        return '(no response)'
    return first.strip()


# Caddy warnings that every plain-HTTP Caddy prints at start and stop.
BENIGN = ('HTTP/2 skipped because it requires TLS', 'HTTP/3 skipped because it requires TLS',
          'exiting; byeee!!')


def caddy_log_problems(path, wrk_ends):
    """Distinct warn/error messages of a Caddy JSON log:
    {message: [count within 1 s before a wrk run returned, count at other times]}."""
    found = {}
    try:
        lines = Path(path).read_text(errors='replace').splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        level = entry.get('level', '')
        if level not in ('warn', 'error', 'panic', 'fatal'):
            continue
        msg = entry.get('msg', '')
        if any(b in msg for b in BENIGN):
            continue
        key = f"{level} {entry.get('logger', '')}: {msg}"
        if entry.get('error') and entry['error'] != msg:
            key += f" ({str(entry['error'])[:160]})"
        if entry.get('status'):
            key += f" status {entry['status']}"
        ts = entry.get('ts', 0)
        at_end = any(end - 1.0 <= ts <= end + 0.2 for end in wrk_ends)
        found.setdefault(key, [0, 0])[0 if at_end else 1] += 1
    return found


# Warning and error lines of the Python servers' own logs (Hearth's workers log
# into caddy.log, uWSGI's and nginx's logs are not read).
PY_LOGS = (('uvicorn.log', re.compile(r'^(WARNING|ERROR|CRITICAL):\s+(.*)')),
           ('gunicorn.log', re.compile(r'\[(WARNING|ERROR|CRITICAL)\]\s+(.*)')))


def python_log_problems(d):
    """{'<log>: <LEVEL> <message>': count} of the warn/error lines of the Python servers' logs."""
    found = {}
    for name, pattern in PY_LOGS:
        try:
            lines = (d / name).read_text(errors='replace').splitlines()
        except OSError:
            continue
        for line in lines:
            m = pattern.search(line)
            if m:
                key = f'{name}: {m.group(1)} {m.group(2).strip()[:160]}'
                found[key] = found.get(key, 0) + 1
    return found


def run(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f'(unavailable: {e})'
    text = (p.stdout + p.stderr).strip()
    return text.splitlines()[0] if text else '(no output)'


def machine(settings, repo):
    cpu = '(unknown)'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    mem = ''
    try:
        for line in Path('/proc/meminfo').read_text().splitlines():
            if line.startswith('MemTotal'):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    py = settings['python']
    return [
        ('CPUs (nproc)', str(os.cpu_count())),
        ('CPU model', cpu),
        ('Memory', mem),
        ('Kernel', f'{platform.system()} {platform.release()} ({platform.machine()})'),
        ('Run', f"{settings.get('started', '?')} → {settings.get('finished', '?')}"),
        ('Load average before / after', f"{settings.get('loadavg_before', '?')} / {settings.get('loadavg_after', '?')}"),
        ('Hearth commit at the start', settings.get('commit', '?')),
        ('Caddy', (settings.get('caddy_version') or run([settings['caddy'], 'version']).split(' h1:')[0])
         + f" ({settings.get('caddy_orig', 'bin/caddy')} built {settings.get('caddy_built', '?')}, "
           f"sha256 {settings.get('caddy_sha256', '?')}…, copied into the run directory at the start "
           'and run from there)'),
        ('Python', run([py, '--version']) + f' ({py})'),
        ('Django', run([py, '-c', 'import django; print(django.get_version())'])),
        ('gunicorn', run([settings['gunicorn'], '--version'])),
        ('uvicorn', run([py, '-m', 'uvicorn', '--version'])
         + (f" ({settings['uvicorn_impl']}: what `--loop auto --http auto` picks here)"
            if settings.get('uvicorn_impl') else '')),
        ('uWSGI', run([settings['uwsgi'], '--version'])),
        ('nginx', run([settings['nginx'], '-v']).replace('nginx version: ', '')),
        ('wrk', run([settings['wrk'], '-v']).split(' Copyright')[0]),
        ('h2load', run([settings.get('h2load', 'h2load'), '--version'])),
        ('OpenSSL', run(['openssl', 'version'])),
    ]


def fmt_rps(v):
    return '—' if v is None else f'{v:,.0f}'


def fmt_ms(v):
    return '—' if v is None else (f'{v:.2f} ms' if v < 10 else f'{v:.1f} ms')


def or_dash(v, template):
    """template formatted with v, or a dash where v is None."""
    return '—' if v is None else template.format(v)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def table(headings, align, rows):
    """The lines of a Markdown table; align has a letter a column, l (left)
    or r (right), and each row is a list of cells."""
    lines = ['| ' + ' | '.join(headings) + ' |',
             '|' + ''.join('---:|' if a == 'r' else '---|' for a in align)]
    return lines + ['| ' + ' | '.join(cells) + ' |' for cells in rows]


def speed_row(label, s, r):
    """A peer's row in an app's speed table: its summary s, and Hearth ÷
    peer r (None for Hearth itself)."""
    errs = ', '.join(f'{k} {v}' for k, v in s['socket_errors'].items()) or '0'
    return [label, fmt_rps(s['rps']), fmt_ms(s['p99']), or_dash(r, '{:.2f}×'),
            ' / '.join(fmt_rps(v) for v in s['rounds']), str(s['non2xx']), errs]


def cpu_row(label, ms):
    """A peer's row in an app's CPU table, from its measurements ms."""
    comms, front_us, py_us = {}, [], []
    for m in ms:
        if not m['cpu'] or not m['window']:
            continue
        front = py = 0.0
        for comm, (n, cpu) in m['cpu'].items():
            comms.setdefault(comm, []).append((n, cpu / m['window'] * 100))
            if comm in FRONTS:
                front += cpu
            else:
                py += cpu
        if m['requests']:
            front_us.append(front / m['requests'] * 1e6 if front else None)
            py_us.append(py / m['requests'] * 1e6 if py else None)
    parts = []
    for comm, vals in sorted(comms.items(), key=lambda kv: -median(v[1] for v in kv[1])):
        n = max(v[0] for v in vals)
        parts.append(f"{n} × {comm}: {median(v[1] for v in vals):.0f}%")
    wrk = median(m['wrk_cpu'] / m['window'] * 100 for m in ms
                 if m['wrk_cpu'] is not None and m['window'])
    return [label, '; '.join(parts) or '—', or_dash(median(front_us), '{:.0f}'),
            or_dash(median(py_us), '{:.0f}'), or_dash(wrk, '{:.0f}%'),
            or_dash(median(m['others'] for m in ms), '{:.0f}%'),
            or_dash(median(m['busy'] for m in ms), '{:.0f}%')]


def main(run_dir, out_md, out_png):
    run_dir = Path(run_dir).resolve()
    repo = Path(__file__).resolve().parents[2]
    settings = dict(line.split('\t', 1) for line in
                    (run_dir / 'settings.tsv').read_text().splitlines() if '\t' in line)
    rows = read_rows(run_dir)

    data = {}  # (app, peer) -> list of closed-loop measurements over plain HTTP
    tls_data = {}  # (app, peer, kind) -> list of closed-loop measurements over TLS
    open_data = {}  # (app, peer) -> list of {load: result} of the open-loop runs
    order_seen = {}  # round -> app -> [peers in order]
    for rnd, pos, app, peer, d, kind in rows:
        d = Path(d)
        if kind == 'open':
            open_data.setdefault((app, peer), []).append({'round': int(rnd), 'dir': d, 'loads': open_results(d)})
            continue
        if kind == 'tls-h2':
            m = parse_h2load((d / 'h2load.txt').read_text(errors='replace'), d / 'h2load.txt.requests')
        else:
            m = parse_wrk((d / 'wrk.txt').read_text(errors='replace'))
        m['round'], m['position'], m['dir'], m['kind'] = int(rnd), int(pos), d, kind
        m['rss'], m['pss'] = memory(d)
        m['cpu'], m['window'], m['busy'] = cpu_split(d / 'cpu-before.json', d / 'cpu-after.json')
        m['wrk_cpu'] = child_cpu_seconds(d / 'times-before.txt', d / 'times-after.txt')
        m['others'] = None  # % of one core used by processes that are neither servers nor wrk
        if m['cpu'] and m['wrk_cpu'] is not None and m['window']:
            machine_s = m['cpu'].pop(None)[1]
            servers_s = sum(cpu for _, cpu in m['cpu'].values())
            m['others'] = max(0.0, machine_s - servers_s - m['wrk_cpu']) / m['window'] * 100
        elif m['cpu']:
            m['cpu'].pop(None, None)
        m['status_before'] = status_line(d / 'response.txt')
        m['status_after'] = status_line(d / 'response-after.txt')
        m['leftovers'] = (d / 'leftovers.txt').read_text().strip() if (d / 'leftovers.txt').exists() else ''
        try:
            ends = [float(t) for t in (d / 'wrk-ends.txt').read_text().split()]
        except OSError:
            ends = []
        m['caddy_problems'] = caddy_log_problems(d / 'caddy.log', ends)
        m['python_problems'] = python_log_problems(d)
        if kind != 'closed':
            tls_data.setdefault((app, peer, kind), []).append(m)
            continue
        data.setdefault((app, peer), []).append(m)
        order_seen.setdefault(int(rnd), {}).setdefault(app, []).append(peer)

    apps = [a for a in APPS if any(k[0] == a for k in data)]
    peers = [p for p in PEERS if any(k[1] == p for k in data)]
    summary = {}
    for key, ms in data.items():
        summary[key] = {
            'rps': median(m['rps'] for m in ms),
            'p99': median(m['p99'] for m in ms),
            'rounds': [m['rps'] for m in sorted(ms, key=lambda m: m['round'])],
            'non2xx': sum(m['non2xx'] for m in ms),
            'requests': sum(m['requests'] or 0 for m in ms),
            'socket_errors': {},
        }
        for m in ms:
            for k, v in m['socket_errors'].items():
                summary[key]['socket_errors'][k] = summary[key]['socket_errors'].get(k, 0) + v

    def ratio(app, peer):
        h, p = summary.get((app, 'hearth')), summary.get((app, peer))
        if not h or not p or not h['rps'] or not p['rps']:
            return None
        return h['rps'] / p['rps']

    quick = settings['duration'] != '10s' or settings['rounds'] != '3'
    L = []
    L.append('# Hearth benchmark results')
    L.append('')
    L.append('Written by `make bench` (`tests/bench/run.sh`, then `tests/bench/report.py`). '
             'Numbers are only comparable within one run on one machine: every peer below '
             'was measured in the same run, on the same machine, over loopback.')
    if quick:
        L.append('')
        L.append(f"**This is a quick run** (duration {settings['duration']}, {settings['rounds']} "
                 'round(s)), not the default 10s × 3 rounds: treat the numbers as rough.')
    L.append('')

    ab = any(peer == 'hearth-base' for _, peer in summary)
    if ab:  # the A/B of a change: the two builds, not the targets against the peers
        L.append('## A/B: this build against the base build')
        L.append('')
        L.append(f"Base build: `{settings.get('base_orig', '?')}` (sha256 {settings.get('base_sha256', '?')}…, "
                 f"built {settings.get('base_built', '?')}); this build: commit {settings.get('commit', '?')}. "
                 'Both ran alternately in every round; the ratio is of medians.')
        L.append('')
        L.append('The machine drifts between rounds (other VMs), so each round\'s two runs, next to each other in '
                 'time, are compared first: "paired" is the median of the per-round ratios.')
        L.append('')
        rows = []
        for app in apps:
            h, b = summary.get((app, 'hearth')), summary.get((app, 'hearth-base'))
            pairs = [x / y for x, y in zip((h or {}).get('rounds', []), (b or {}).get('rounds', []))
                     if x is not None and y]
            rows.append([app, fmt_rps(h and h['rps']), fmt_rps(b and b['rps']), or_dash(ratio(app, 'hearth-base'), '{:.3f}×'),
                         or_dash(median(pairs), '{:.3f}×'), ' / '.join(f'{r:.2f}' for r in pairs),
                         ' / '.join(fmt_rps(v) for v in (h or {}).get('rounds', [])),
                         ' / '.join(fmt_rps(v) for v in (b or {}).get('rounds', []))])
        L.extend(table(['app', 'this build req/s', 'base req/s', 'ratio of medians', 'paired', 'per-round ratios',
                        'this build per round', 'base per round'], 'lrrrrlll', rows))

    # --- targets
    if not ab:
        L.append('## Targets')
        L.append('')
        L.append('Each target compares Hearth with a peer measured in the same run; "per round" pairs the two '
                 'runs of each round (next to each other in time), and a target is met only when it holds '
                 'in every round.')
        L.append('')
    rows, all_met = [], True

    def target(name, app, hearth_ms, peer_ms, value, goal, higher, fmt):
        """A row of the targets table: value(m) of Hearth's and the peer's
        measurements, Hearth ÷ peer against goal (≥ if higher, else ≤)."""
        nonlocal all_met
        h = median(value(m) for m in hearth_ms or [])
        p = median(value(m) for m in peer_ms or [])
        r = h / p if h is not None and p else None
        by_round = {m['round']: value(m) for m in peer_ms or []}
        pairs = [value(m) / by_round[m['round']] for m in sorted(hearth_ms or [], key=lambda m: m['round'])
                 if value(m) is not None and by_round.get(m['round'])]
        ok = (lambda x: x >= goal) if higher else (lambda x: x <= goal)
        if r is None:
            verdict = 'not measured'
        elif not ok(r):
            verdict = '**NOT met**'
        elif not all(ok(x) for x in pairs):
            verdict = f'**NOT met** in {sum(not ok(x) for x in pairs)} of {len(pairs)} rounds (met by the medians)'
        else:
            verdict = 'met'
        all_met = all_met and verdict == 'met'
        rows.append([name, app, or_dash(h, fmt), or_dash(p, fmt), or_dash(r, '{:.2f}×'),
                     ' / '.join(f'{x:.2f}' for x in pairs) or '—', verdict])
        return verdict == 'met'

    for peer, goal, target_apps in TARGETS:
        for app in target_apps:
            target(f'req/s ≥ {goal:g}× {SHORT[peer]}', app, data.get((app, 'hearth')), data.get((app, peer)),
                   lambda m: m['rps'], goal, True, '{:,.0f}')
    for app in ('hello', 'django'):
        target(f'saturated p99 (wrk -c{settings["connections"]}) ≤ {SATURATED_P99:g}× nginx→uWSGI', app,
               data.get((app, 'hearth')), data.get((app, 'nginx-uwsgi')), lambda m: m['p99'], SATURATED_P99,
               False, '{:.2f} ms')
    for app in ('hello', 'django'):
        for load in OPEN_P99_LOADS:
            def p99_at(m, load=load):
                r = m['loads'].get(load)
                return r['latency_us']['p99'] / 1e3 if r else None
            target(f'p99 at {load}% load ≤ nginx→uWSGI', app, open_data.get((app, 'hearth')),
                   open_data.get((app, 'nginx-uwsgi')), p99_at, 1.0, False, '{:.2f} ms')
    for app in sorted({k[0] for k in tls_data}):
        for kind in ('tls-h1', 'tls-h2'):
            target(f'{KINDS[kind].split(" (")[0]} req/s ≥ {TLS_TARGET:g}× nginx (TLS)→uWSGI', app,
                   tls_data.get((app, 'hearth', kind)), tls_data.get((app, 'nginx-uwsgi', kind)),
                   lambda m: m['rps'], TLS_TARGET, True, '{:,.0f}')
    memory_met, small_board_met = True, True
    for app in ('hello', 'django'):
        memory_met &= target(f'peak whole-stack RSS ≤ {RSS_TARGET:g}× gunicorn, on this machine (the full GC floor)', app,
                             data.get((app, 'hearth')), data.get((app, 'gunicorn')), lambda m: m['rss'],
                             RSS_TARGET, False, '{:.0f} MB')
    for app in ('hello', 'django'):  # the same default where memory is not plentiful
        if (app, 'hearth-2g') in data:
            small_board_met &= target(f'peak whole-stack RSS ≤ {RSS_TARGET:g}× gunicorn, Hearth as on a 2 GiB board',
                                      app, data.get((app, 'hearth-2g')), data.get((app, 'gunicorn')),
                                      lambda m: m['rss'], RSS_TARGET, False, '{:.0f} MB')
        else:
            small_board_met = False
    if not ab:
        L.extend(table(['target', 'app', 'Hearth', 'peer', 'Hearth ÷ peer (medians)', 'per round', 'result'],
                       'llrrrll', rows))
        L.append('')
        L.append('All targets met.' if all_met else 'Not every target is met (see the rows above).')
        if small_board_met and not memory_met:
            L.append('')
            L.append(f'Memory: the stack is within {RSS_TARGET:g}× gunicorn\'s as on a 2 GiB board, and above it here '
                     'only by the GC floor, which the default `caddy_gc_floor auto` grows to its full 64 MiB only '
                     'on machines with about 9 GiB of memory or more (a 128th of Caddy\'s memory limit): the '
                     'documented trade of memory for speed only where memory is plentiful that the target allows.')
    analysis = Path(__file__).with_name('analysis.md')
    if analysis.exists() and not ab:  # the profile of where the time goes, written by hand
        L.append('')
        L.append(analysis.read_text().rstrip())
    L.append('')
    measured = [m for ms in list(data.values()) + list(tls_data.values()) for m in ms]
    disturbed = [m for m in measured if m['others'] is not None and m['others'] > OTHERS_LIMIT]
    if disturbed:
        L.append(f'{len(disturbed)} of {len(measured)} measurements ran while other jobs used more '
                 f'than {OTHERS_LIMIT}% of a core (listed under "Errors and anomalies"); the median '
                 'over rounds damps that, but the numbers are less certain than on an idle machine.')
        L.append('')

    # --- tables per app
    for app in apps:
        L.append(f'## {app}: {APPS[app]}')
        L.append('')
        L.extend(table(['peer', 'req/s (median)', 'p99 latency (median)', 'Hearth ÷ peer (req/s)',
                        'req/s per round', 'non-2xx/3xx', 'socket errors'], 'lrrrlrl',
                       [speed_row(peer_label(peer, app), summary[(app, peer)],
                                  None if peer == 'hearth' else ratio(app, peer))
                        for peer in peers if summary.get((app, peer))]))
        L.append('')
        L.append('CPU use during the measured wrk run (median over rounds): the servers per '
                 f"process name, in % of one core (the machine has {os.cpu_count()} cores, "
                 f"{os.cpu_count() * 100}% in all), their CPU time per request (HTTP front: caddy, "
                 'nginx; Python side: workers and masters), wrk, everything else (user, nice and '
                 'system time of all other processes and kernel threads: other jobs), and the '
                 'whole machine busy (all time not idle, irq and softirq included):')
        L.append('')
        L.extend(table(['peer', 'processes (count × name: % of a core)', 'front µs/request',
                        'Python side µs/request', 'wrk', 'everything else', 'whole machine busy'],
                       'llrrrrr',
                       [cpu_row(peer_label(peer, app), data[(app, peer)])
                        for peer in peers if data.get((app, peer))]))
        L.append('')
        L.append('Memory: the peak, over the measured wrk run (sampled every ~0.25 s), of the summed resident '
                 'size (RSS) and proportional set size (PSS: shared pages divided among the processes that '
                 'share them) of all the peer\'s processes, front and Python side (median over rounds):')
        L.append('')
        L.extend(table(['peer', 'peak RSS', 'peak PSS', 'RSS per round'], 'lrrl',
                       [[peer_label(peer, app), or_dash(median(m['rss'] for m in data[(app, peer)]), '{:.0f} MB'),
                         or_dash(median(m['pss'] for m in data[(app, peer)]), '{:.0f} MB'),
                         ' / '.join(or_dash(m['rss'], '{:.0f}') for m in sorted(data[(app, peer)], key=lambda m: m['round']))]
                        for peer in peers if data.get((app, peer))]))
        L.append('')

    # --- TLS
    for app in sorted({k[0] for k in tls_data}):
        L.append(f'## {app} over HTTPS (TLS 1.3)')
        L.append('')
        rows_tls = []
        for kind in ('tls-h1', 'tls-h2'):
            for peer in peers:
                ms = tls_data.get((app, peer, kind))
                if not ms:
                    continue
                base = tls_data.get((app, 'nginx-uwsgi', kind))
                h, b = median(m['rps'] for m in ms), median(m['rps'] for m in base or [])
                rows_tls.append([KINDS[kind], SHORT[peer].replace('\n', ' ') + (' (TLS)' if peer == 'nginx-uwsgi' else ''),
                                 fmt_rps(h), fmt_ms(median(m['p50'] for m in ms)), fmt_ms(median(m['p99'] for m in ms)),
                                 or_dash(h / b if peer != 'nginx-uwsgi' and h and b else None, '{:.2f}×'),
                                 ' / '.join(fmt_rps(m['rps']) for m in sorted(ms, key=lambda m: m['round'])),
                                 or_dash(median(m['rss'] for m in ms), '{:.0f} MB')])
        L.extend(table(['protocol', 'peer', 'req/s (median)', 'p50', 'p99', '÷ nginx (TLS)→uWSGI',
                        'req/s per round', 'peak RSS'], 'llrrrrlr', rows_tls))
        L.append('')

    # --- open loop
    for app in [a for a in APPS if any(k[0] == a for k in open_data)]:
        L.append(f'## {app}: latency at a fixed request rate (open loop)')
        L.append('')
        L.append('Each load is a share of the best median peak (closed loop, above) of the app\'s Python peers. '
                 'Latency counts from when each request was due, not from when it was sent, so a server '
                 'that stalls is charged for the requests that queue behind the stall. Medians over rounds; '
                 'CPU is in % of one core and per request (the front: caddy or nginx; the Python side: '
                 'workers and masters), "generator CPU" is tests/bench/loadgen\'s own.')
        L.append('')
        rows_open = []
        for peer in peers:
            ms = open_data.get((app, peer))
            if not ms:
                continue
            for load in sorted({l for m in ms for l in m['loads']}):
                rs = [m['loads'][load] for m in ms if load in m['loads']]

                def med(f, rs=rs):
                    return median(f(r) for r in rs)
                lat = lambda q: med(lambda r: r['latency_us'][q] / 1e3)
                rows_open.append([SHORT[peer].replace('\n', ' '), f'{load}%', fmt_rps(med(lambda r: r['target_rate'])),
                                  fmt_rps(med(lambda r: r['achieved_rate'])), fmt_ms(lat('p50')), fmt_ms(lat('p90')),
                                  fmt_ms(lat('p99')), fmt_ms(lat('p999')), fmt_ms(lat('max')),
                                  ' / '.join(fmt_ms(r['latency_us']['p99'] / 1e3) for r in rs),
                                  str(sum(r['errors'] + r['unsent'] for r in rs)),
                                  or_dash(med(lambda r: r.get('front_pct')), '{:.0f}%') + ' / '
                                  + or_dash(med(lambda r: r.get('front_us')), '{:.0f} µs'),
                                  or_dash(med(lambda r: r.get('python_pct')), '{:.0f}%') + ' / '
                                  + or_dash(med(lambda r: r.get('python_us')), '{:.0f} µs'),
                                  or_dash(med(lambda r: r['cpu_fraction'] * 100), '{:.0f}%')])
        L.extend(table(['peer', 'load', 'rate', 'achieved', 'p50', 'p90', 'p99', 'p99.9', 'max', 'p99 per round',
                        'errors + unsent', 'front CPU (of a core / per request)', 'Python side CPU',
                        'generator CPU'], 'lrrrrrrrrlrrrr', rows_open))
        L.append('')

    L.append('![requests per second per peer and app, and latency at fixed rates](results.png)')
    L.append('')

    # --- anomalies
    L.append('## Errors and anomalies')
    L.append('')
    notes = []
    closed_like = [((app, peer, 'closed'), ms) for (app, peer), ms in data.items()]
    closed_like += list(tls_data.items())
    for (app, peer, kind), ms in sorted(closed_like):
        for m in sorted(ms, key=lambda m: m['round']):
            where = (f"{app} / {SHORT[peer].splitlines()[0]} / round {m['round']}"
                     + (f' / {KINDS[kind]}' if kind != 'closed' else ''))
            if m['rps'] is None:
                notes.append(f"{where}: wrk printed no Requests/sec (see {m['dir'] / 'wrk.txt'})")
            if m['non2xx']:
                notes.append(f"{where}: {m['non2xx']} non-2xx/3xx responses of {m['requests']}")
            if m['socket_errors']:
                notes.append(f"{where}: socket errors " + ', '.join(f'{k} {v}' for k, v in m['socket_errors'].items()))
            for label, line in (('before', m['status_before']), ('after', m['status_after'])):
                if ' 200' not in line:
                    notes.append(f"{where}: single request {label} the load answered `{line}`")
            if m['others'] is not None and m['others'] > OTHERS_LIMIT:
                notes.append(f"{where}: processes other than the servers and wrk used "
                             f"{m['others']:.0f}% of a core during the measurement: another job "
                             'was running, so this round is disturbed')
            if m['leftovers']:
                notes.append(f"{where}: on stop: {m['leftovers']}")
            for msg, (at_end, other) in m['caddy_problems'].items():
                if at_end:
                    notes.append(f"{where}: Caddy log {at_end}× `{msg}` within 1 s before a wrk run "
                                 '(warm-up or measured) returned, i.e. when wrk closed its connections '
                                 'with requests still in flight')
                if other:
                    notes.append(f"{where}: Caddy log {other}× `{msg}` at other times (under load, "
                                 'at start or at stop)')
            for msg, count in m['python_problems'].items():
                notes.append(f"{where}: {count}× `{msg}`")
    for (app, peer), ms in sorted(open_data.items()):
        for m in sorted(ms, key=lambda m: m['round']):
            where = f"{app} / {SHORT[peer].splitlines()[0]} / round {m['round']} / open loop"
            for load, r in sorted(m['loads'].items()):
                lost = {k: r[k] for k in ('errors', 'unsent') if r.get(k)}  # errors include timeouts
                if lost:
                    notes.append(f"{where} at {load}% ({r['target_rate']:,.0f} req/s): "
                                 + ', '.join(f'{k} {v}' for k, v in lost.items()))
                if r.get('cpu_fraction', 0) > 0.25:
                    notes.append(f"{where} at {load}%: the generator used {r['cpu_fraction'] * 100:.0f}% of a core "
                                 '(more than a quarter: it competed with the server)')
            leftovers = m['dir'] / 'leftovers.txt'
            if leftovers.exists() and leftovers.read_text().strip():
                notes.append(f"{where}: on stop: {leftovers.read_text().strip()}")
    exit_left = run_dir / 'leftovers-at-exit.txt'
    if exit_left.exists() and exit_left.read_text().strip():
        notes.append('at exit: ' + exit_left.read_text().strip())
    if notes:
        L.extend(f'- {n}' for n in notes)
    else:
        L.append('None: every wrk run reported 0 non-2xx/3xx responses and 0 socket errors '
                 '(connect, read, write, timeout); a single request before and after each load '
                 'answered 200; no Caddy warn/error log lines (other than the HTTP/2 and HTTP/3 '
                 '"requires TLS" notices and the exit notice) and none in the gunicorn and uvicorn '
                 'logs; every server stopped on SIGTERM '
                 'with no process left behind.')
    L.append('')

    # --- method
    L.append('## Method')
    L.append('')
    L.append(f"- Load: `wrk -t{settings['threads']} -c{settings['connections']} -d{settings['duration']} "
             f"--latency --timeout 10s http://127.0.0.1:PORT/` (keep-alive, GET /; for the static app "
             "GET /static/css/site.css), on the same machine "
             "as the servers, so wrk competes with them for the cores, as it does for every peer.")
    L.append(f"- Each measurement starts the peer's servers fresh on random free loopback ports, checks "
             f"that the response body is the app's, warms up with a {settings['warmup']} wrk run of "
             "the same shape (discarded), measures, then stops the servers by PID (SIGTERM, bounded "
             "wait) and checks that none of their processes is left.")
    L.append('- Before each measurement, with none of its servers up, the run waits (up to '
             'BENCH_QUIET_WAIT, default 120 s) until the machine is under 10% busy, so that other '
             'jobs (builds, tests) do not share the cores; CPU used during a measurement by '
             'processes other than the servers and wrk is still recorded, and a round where it '
             f'exceeds {OTHERS_LIMIT}% of a core is listed under "Errors and anomalies" as disturbed.')
    L.append(f"- {settings['rounds']} round(s). Each round measures every app on every peer; the "
             'peer order is the list rotated by r on even rounds r, rotated by r+1 and reversed on '
             'odd rounds (the app order flips too), so no peer is always first, last or right '
             'after the same peer, and drift over the run hits every peer. The tables '
             'give the median of the rounds (req/s and p99 separately).')
    orders = []
    for rnd in sorted(order_seen):
        for app, ps in order_seen[rnd].items():
            orders.append(f"round {rnd} {app}: {', '.join(SHORT[p].splitlines()[0] for p in ps)}")
    L.append('- Orders in this run: ' + '; '.join(orders) + '.')
    L.append(f"- {settings['workers']} Python worker processes for every peer. WSGI: one request at a "
             'time each (Hearth default `threads 1`, gunicorn `--worker-class sync`, uWSGI '
             '`--processes 2` without threads). ASGI: one asyncio event loop each, running many '
             'requests at once (Hearth default `max_concurrency 100` per worker, more than wrk\'s '
             f"{settings['connections']} connections; uvicorn has no limit by default). "
             'Per-request access logs are off everywhere (Caddy and gunicorn log none by default; '
             'uWSGI `--disable-logging`; nginx `access_log off`; uvicorn `--no-access-log`).')
    L.append('- Hearth: `wsgi <app> { dir …; python /usr/bin/python3; workers 2 }` (for the ASGI app '
             '`asgi <app> { … }` with the same options) in a `:PORT { bind 127.0.0.1 }` '
             'site, everything else default (ASGI `lifespan auto`).')
    if 'static' in apps:
        L.append('- Static file: a 2 KiB stylesheet made for the run, five names deep. Hearth: '
                 '`root * <dir>` and `file_server` in a site that also serves the hello app under `/app/` '
                 '(2 workers, idle during the run), as a Django site serves its static files: the file '
                 'server reads through Hearth\'s file system (`modules/linkfs`), and Caddy runs on the one '
                 'CPU `caddy_cpus auto` gives it beside the workers, with the GC floor; Caddy `file_server`: '
                 'the same file with no Hearth in the config (Go\'s defaults: every CPU, no floor); nginx: '
                 '`root <dir>;` with `text/css` for `.css`, `sendfile` off (its default), everything else as '
                 'for nginx → uWSGI.')
    L.append('- Hearth as on a 2 GiB board: the same, with `GOMEMLIMIT=1843MiB` in Caddy\'s environment, '
             'the limit Caddy sets by itself on a board with 2 GiB of memory (90% of it). Only the default '
             '`caddy_gc_floor auto` reads it here: a 128th of the limit, a 14 MiB floor, where this '
             'machine\'s memory gives the full 64 MiB (on a 1 GiB board it would be 7 MiB, below the heap '
             'Go\'s default reaches anyway). Go collects by the limit only near it, far above these heaps. '
             'The row shows the memory and the speed of the default on a small board.')
    L.append('- Caddy → gunicorn: the same bin/caddy with `reverse_proxy unix//…sock` (default transport) '
             'to `gunicorn --workers 2 --worker-class sync --bind unix:…` (Debian /usr/bin/gunicorn). '
             'A unix socket, the faster of the usual choices, so the peer is not handicapped.')
    L.append('- gunicorn direct: `gunicorn --workers 2 --worker-class sync --bind 127.0.0.1:PORT`. '
             'Sync workers close the connection after every response, so wrk reconnects each time.')
    L.append('- nginx → uWSGI: nginx-light with a generated config (nothing from /etc/nginx; '
             '`daemon off`, `worker_processes auto`, `access_log off`, `keepalive_requests 100000`, '
             "Debian's uwsgi_params inline) doing `uwsgi_pass unix:…` to `uwsgi --plugin python3 "
             '--master --processes 2 --socket … --module <app> --disable-logging`.')
    L.append('- uvicorn direct: Debian\'s python3-uvicorn, `python3 -m uvicorn asgi_hello:app --app-dir '
             'tests/bench --workers 2 --host 127.0.0.1 --port PORT --no-access-log`, everything else '
             'default (`--loop auto --http auto`, `--lifespan auto`; the loop and HTTP parser it '
             'picks on this machine are in the versions table). It keeps connections alive, but '
             'with `--workers` it binds the listening socket itself with protocol 0, and asyncio '
             'sets TCP_NODELAY only on sockets whose protocol is TCP: Nagle\'s algorithm then holds '
             'the body (written separately from the head) until wrk\'s delayed ACK, ~40 ms per '
             'request on a kept-alive connection (uvicorn issue #3149; `--workers 1` is not affected). '
             'That is what this command gives, so it stays as measured, but it is a bug, not '
             'uvicorn\'s speed:')
    L.append('- uvicorn direct with TCP_NODELAY: the same command through `tests/bench/uvicorn_nodelay.py`, '
             'which only re-wraps the listening socket\'s descriptor so that it reports protocol TCP '
             '(the workers then set TCP_NODELAY on every connection) and then runs uvicorn\'s own `main`.')
    L.append('- Caddy → uvicorn: the same bin/caddy with `reverse_proxy unix//…sock` (default transport) '
             'to the same uvicorn command with `--uds …sock` instead of host and port.')
    L.append('- ASGI app: `tests/bench/asgi_hello.py`, a plain `async def app(scope, receive, send)` '
             'answering 200 `Hello, world!` with content-type and content-length in two `send` calls '
             '(start, body), and completing lifespan startup and shutdown.')
    L.append('- Caddy `respond`: the same bin/caddy answering the app\'s body with `respond`, no '
             'backend: the ceiling of what any Caddy-fronted peer can reach on this machine.')
    L.append('- Django: a minimal bench project of our own, `tests/bench/djangoapp` '
             '(`benchsite.wsgi:application`), not `examples/django`, so the benchmark does not change when '
             "the example does: DEBUG False, Django's default `startproject` middleware stack and "
             'contrib apps, no database (the view touches neither session nor user), one view '
             'returning `HttpResponse("hello")`.')
    L.append('- HTTPS: the same servers with one ECDSA P-256 certificate made for the run, TLS 1.3 only '
             '(Caddy `tls cert key { protocols tls1.3 }` with `servers { protocols h1 h2 }`; nginx '
             '`listen … ssl http2; ssl_protocols TLSv1.3`, then `uwsgi_pass` as above). HTTP/1.1: '
             f"`wrk https://…` as above; HTTP/2: `h2load -t{settings['threads']} -c16 -m4` (16 connections, 4 "
             'streams each: the same 64 requests in flight), p50/p99 from its per-request log.')
    L.append(f"- Open loop: `tests/bench/loadgen` (ours: one thread, epoll, {settings.get('open_connections', '64')} "
             'kept-alive connections opened up front, one request at a time each) sends request i at '
             'start + i/rate and measures each latency from that due time, so requests that wait for a '
             'free connection or a stalled server count their wait (no coordinated omission). After a '
             f"{settings.get('warmup', '?')} wrk warm-up, each load runs {settings.get('open_warmup', '?')} "
             f"(discarded) then {settings.get('open_duration', '?')}, rising from the lowest; requests not "
             'sent by the end (the server could not keep up) are counted as unsent.')
    L.append('- Memory: `procs.py memwatch` sums RSS and PSS from /proc/PID/smaps_rollup over every process '
             'of the peer every ~0.25 s during the measured wrk run, and keeps the peaks.')
    L.append('- CPU use comes from /proc (utime+stime of each server process and its descendants, '
             'and /proc/stat for the machine) sampled just before and after the measured run.')
    L.append(f"- Raw wrk output, configs and server logs: `{run_dir.relative_to(repo) if run_dir.is_relative_to(repo) else run_dir}` "
             '(scratch, not committed).')
    L.append('')

    # --- machine
    L.append('## Machine and versions')
    L.append('')
    L.append('| | |')
    L.append('|---|---|')
    for k, v in machine(settings, repo):
        L.append(f'| {k} | {v} |')
    L.append('')

    Path(out_md).write_text('\n'.join(L))
    chart(apps, peers, summary, data, ratio, out_png, quick, open_data)


def chart(apps, peers, summary, data, ratio, out_png, quick, open_data):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    open_apps = [a for a in APPS if any(k[0] == a for k in open_data)]
    rows = 2 if open_apps else 1
    fig, axes = plt.subplots(rows, len(apps), figsize=(6.5 * len(apps), 5.2 * rows), squeeze=False)
    colors = {'hearth': '#d9480f', 'hearth-base': '#ffa94d', 'hearth-2g': '#e8590c', 'caddy-gunicorn': '#1c7ed6', 'gunicorn': '#74c0fc',
              'nginx-uwsgi': '#2f9e44', 'caddy-uvicorn': '#7048e8', 'uvicorn': '#b197fc',
              'uvicorn-nodelay': '#d0bfff',
              'caddy-respond': '#adb5bd', 'caddy-files': '#868e96', 'nginx-static': '#69db7c'}
    for ax, app in zip(axes[0], apps):
        ps = [p for p in peers if (app, p) in summary]
        meds = [summary[(app, p)]['rps'] or 0 for p in ps]
        lows = [m - min(v for v in summary[(app, p)]['rounds'] if v is not None) for m, p in zip(meds, ps)]
        highs = [max(v for v in summary[(app, p)]['rounds'] if v is not None) - m for m, p in zip(meds, ps)]
        # A ceiling far above the Python peers (Django) would flatten them:
        # clip its bar then, and say so.
        others = [m + h for m, h, p in zip(meds, highs, ps) if p != 'caddy-respond'] or [1]
        top = max(m + h for m, h in zip(meds, highs)) * 1.22 or 1
        clipped = top > 3 * max(others) * 1.22
        if clipped:
            top = max(others) * 1.6
        shown = [min(m, top * 0.9) for m in meds]
        errs = [[0 if shown[i] < meds[i] else lows[i] for i in range(len(ps))],
                [0 if shown[i] < meds[i] else highs[i] for i in range(len(ps))]]
        bars = ax.bar(range(len(ps)), shown, color=[colors[p] for p in ps],
                      yerr=errs, capsize=4, ecolor='#333333')
        for i, (b, p) in enumerate(zip(bars, ps)):
            label = f'{meds[i]:,.0f}'
            if shown[i] < meds[i]:
                b.set_hatch('//')
                label += ' (bar clipped)'
            r = ratio(app, p)
            if p != 'hearth' and r is not None:
                label += f'\nHearth {r:.2f}×'
            ax.annotate(label, (b.get_x() + b.get_width() / 2, shown[i] + errs[1][i]),
                        ha='center', va='bottom', fontsize=8, xytext=(0, 2), textcoords='offset points')
        ax.set_xticks(range(len(ps)))
        ax.set_xticklabels([SHORT[p] for p in ps], fontsize=8)
        ax.set_ylabel('requests/s (median; bars: min–max of rounds)')
        ax.set_title(f'{app} ({KIND[app].upper()})')
        ax.set_ylim(0, top)
        ax.grid(axis='y', alpha=0.3)
    for ax in axes[1] if rows == 2 else []:
        ax.set_visible(False)
    for ax, app in zip(axes[1] if rows == 2 else [], open_apps):
        ax.set_visible(True)
        for p in peers:
            ms = open_data.get((app, p))
            if not ms:
                continue
            loads = sorted({l for m in ms for l in m['loads']})
            for q, style in (('p50', ':'), ('p90', '--'), ('p99', '-')):
                ys = [median(m['loads'][l]['latency_us'][q] / 1e3 for m in ms if l in m['loads']) for l in loads]
                ax.plot(loads, ys, style, marker='o', color=colors[p], markersize=3,
                        label=f"{SHORT[p].splitlines()[0]} {q}")
        ax.set_yscale('log')
        ax.set_xlabel('load (% of the best peer\'s peak req/s)')
        ax.set_ylabel('latency, ms (median over rounds; log scale)')
        ax.set_title(f'{app}: latency at a fixed rate (open loop)')
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle('Hearth vs peers, 2 Python workers each, on loopback'
                 + (' (quick run)' if quick else ''))
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == '--peak':
        best = peak(sys.argv[2], sys.argv[3])
        if not best:
            sys.exit(f'no closed-loop measurement of {sys.argv[3]} in {sys.argv[2]}')
        print(best)
    elif len(sys.argv) == 4:
        main(*sys.argv[1:])
    else:
        sys.exit(__doc__)
