"""Hearth's SQLite backup, run in the app's environment by a `backup` block:
an online copy through SQLite's backup API (never a plain file copy), checked
with PRAGMA integrity_check before it counts, written under a temporary name
and renamed into place, then the oldest copies beyond `keep` removed.

argv[1] is JSON: name, to, keep, and either path (the database file) or
alias and settings_module (a Django DATABASES alias). It prints one JSON line
(file, size, source, removed) and exits 0, or prints why and exits 1.

The backup directory is opened once, without following a link, and must
be this account's own and writable by no one else; every file in it is
then reached through that open directory and created only if new, so no
other account can have the copy written through a link it planted (which
matters when this runs as root).

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


def open_destination(to):
    """The backup directory, made if missing and opened without following
    a link; it must belong to this account and be writable by no other."""
    os.makedirs(to, mode=0o700, exist_ok=True)
    try:
        fd = os.open(to, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        fail('the backup directory %s cannot be opened as a directory (%s): if it is a symbolic link, give the directory it leads to' % (to, e.strerror))
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        fail('the backup directory %s belongs to uid %d with mode %03o: it must belong to the account the backup runs as (uid %d) and be writable by no other, '
             'or another account could put a link there for the copy to be written through; fix it with: chown %d %s && chmod 700 %s'
             % (to, st.st_uid, st.st_mode & 0o777, os.geteuid(), os.geteuid(), to, to))
    return fd


def create(fd, name):
    """A new, empty file of the directory fd (never one that exists, nor a link)."""
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd))
    return '/proc/self/fd/%d/%s' % (fd, name)


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
    if os.geteuid() == 0 and os.path.islink(source):
        fail('the database %s is a symbolic link, and this restore runs as root: it would write into wherever the link leads; '
             'give the backup the path of the database itself' % source)
    aside = None
    if os.path.isfile(source):
        fd = open_destination(to)
        aside_name = '%s-before-restore-%s.sqlite3' % (name, stamp())
        aside = os.path.join(to, aside_name)
        current = sqlite3.connect(source, timeout=60)
        kept = sqlite3.connect(create(fd, aside_name))
        try:
            current.backup(kept)
        finally:
            kept.close()
            current.close()
            os.close(fd)
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
    fd = open_destination(to)
    when = stamp()
    final_name = '%s-%s.sqlite3' % (name, when)
    partial_name = '.%s-%s.sqlite3.partial' % (name, when)
    src = sqlite3.connect(source, timeout=60)
    dst = sqlite3.connect(create(fd, partial_name))
    try:
        src.backup(dst)  # every page in one step: the copy is one consistent moment
        check = dst.execute('PRAGMA integrity_check').fetchall()
    finally:
        dst.close()
        src.close()
    if check != [('ok',)]:
        os.unlink(partial_name, dir_fd=fd)
        fail('the copy of %s failed PRAGMA integrity_check: %s' % (source, '; '.join(r[0] for r in check[:5])))
    copy = os.open(partial_name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    try:
        os.fsync(copy)
        size = os.fstat(copy).st_size
    finally:
        os.close(copy)
    os.rename(partial_name, final_name, src_dir_fd=fd, dst_dir_fd=fd)
    os.fsync(fd)
    pattern = re.compile(r'^%s-\d{8}T\d{9}Z\.sqlite3$' % re.escape(name))
    copies = sorted(f for f in os.listdir(fd) if pattern.match(f))
    removed = []
    for old in copies[:max(len(copies) - keep, 0)]:
        os.unlink(old, dir_fd=fd)
        removed.append(old)
    os.close(fd)
    print(json.dumps({'file': os.path.join(to, final_name), 'size': size, 'source': source, 'removed': removed}))


if __name__ == '__main__':
    main()
