"""Hearth's SQLite backup, run in the app's environment by a `backup` block:
an online copy through SQLite's backup API (never a plain file copy), checked
with PRAGMA integrity_check before it counts, written under a temporary name
and renamed into place, then the oldest copies beyond `keep` removed.

argv[1] is JSON: name, to, keep, and either path (the database file) or
alias and settings_module (a Django DATABASES alias). It prints one JSON line
(file, size, source, removed) and exits 0, or prints why and exits 1.

With "restore" (a copy's path) in argv[1], it puts that copy back instead:
the copy must pass integrity_check; the current database is first copied
aside into `to` (<name>-before-restore-<time>.sqlite3); then the copy is
written into the database through the backup API, which holds the
database's write lock for the one step, so the app's open connections see
the old data or the new, never a mix."""
import json
import os
import re
import sqlite3
import sys
import time


def fail(message):
    print(message)
    sys.exit(1)


def django_database(alias, settings_module):
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', settings_module)
    sys.path.insert(0, os.getcwd())
    import django
    django.setup()
    from django.conf import settings
    db = settings.DATABASES.get(alias)
    if db is None:
        fail('the app has no database %r in DATABASES (it has: %s)' % (alias, ', '.join(settings.DATABASES) or 'none'))
    engine = db.get('ENGINE', '')
    if not engine.endswith('sqlite3'):
        fail('database %r uses %s, not SQLite: a backup block copies SQLite files only' % (alias, engine or 'no ENGINE'))
    name = str(db.get('NAME') or '')
    if not name or name == ':memory:' or name.startswith('file:'):
        fail('database %r has no file to copy (NAME %r)' % (alias, name))
    return os.path.abspath(name)


def checked(path):
    """The integrity check of the SQLite file at path ('ok' when sound)."""
    db = sqlite3.connect('file:%s?mode=ro' % path, uri=True)
    try:
        rows = db.execute('PRAGMA integrity_check').fetchall()
    except sqlite3.DatabaseError as e:
        return str(e)
    finally:
        db.close()
    return '; '.join(r[0] for r in rows[:5])


def restore(name, to, source, copy):
    copy = os.path.abspath(copy)
    if not os.path.isfile(copy):
        fail('the copy %s does not exist' % copy)
    check = checked(copy)
    if check != 'ok':
        fail('the copy %s failed PRAGMA integrity_check (%s): not restored' % (copy, check))
    aside = None
    if os.path.isfile(source):
        os.makedirs(to, mode=0o700, exist_ok=True)
        aside = os.path.join(to, '%s-before-restore-%s.sqlite3' % (name, stamp()))
        current = sqlite3.connect(source, timeout=60)
        kept = sqlite3.connect(aside)
        try:
            current.backup(kept)
        finally:
            kept.close()
            current.close()
        os.chmod(aside, 0o600)
    src = sqlite3.connect('file:%s?mode=ro' % copy, uri=True)
    dst = sqlite3.connect(source, timeout=60)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    check = checked(source)
    if check != 'ok':
        fail('after the restore, %s fails PRAGMA integrity_check (%s); the database before it is %s' % (source, check, aside))
    print(json.dumps({'restored': copy, 'into': source, 'kept_aside': aside}))


def stamp():
    now = time.time()
    return time.strftime('%Y%m%dT%H%M%S', time.gmtime(now)) + '%03dZ' % (int(now * 1000) % 1000)


def main():
    spec = json.loads(sys.argv[1])
    name, to, keep = spec['name'], spec['to'], int(spec['keep'])
    if spec.get('alias'):
        source = django_database(spec['alias'], spec['settings_module'])
    else:
        source = os.path.abspath(spec['path'])
    if spec.get('restore'):
        restore(name, to, source, spec['restore'])
        return
    if not os.path.isfile(source):
        fail('the database %s does not exist (yet): nothing to back up' % source)
    os.makedirs(to, mode=0o700, exist_ok=True)
    when = stamp()
    final = os.path.join(to, '%s-%s.sqlite3' % (name, when))
    partial = os.path.join(to, '.%s-%s.sqlite3.partial' % (name, when))
    src = sqlite3.connect(source, timeout=60)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst)  # every page in one step: the copy is one consistent moment
        check = dst.execute('PRAGMA integrity_check').fetchall()
    finally:
        dst.close()
        src.close()
    if check != [('ok',)]:
        os.unlink(partial)
        fail('the copy of %s failed PRAGMA integrity_check: %s' % (source, '; '.join(r[0] for r in check[:5])))
    os.chmod(partial, 0o600)
    with open(partial, 'rb') as f:
        os.fsync(f.fileno())
    os.rename(partial, final)
    directory = os.open(to, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    pattern = re.compile(r'^%s-\d{8}T\d{9}Z\.sqlite3$' % re.escape(name))
    copies = sorted(f for f in os.listdir(to) if pattern.match(f))
    removed = []
    for old in copies[:max(len(copies) - keep, 0)]:
        os.unlink(os.path.join(to, old))
        removed.append(old)
    print(json.dumps({'file': final, 'size': os.path.getsize(final), 'source': source, 'removed': removed}))


if __name__ == '__main__':
    main()
