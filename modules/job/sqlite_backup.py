"""Hearth's SQLite backup, run in the app's environment by a `backup` block:
an online copy through SQLite's backup API (never a plain file copy), checked
with PRAGMA integrity_check, then handed to Caddy, which writes it into the
backup directory and prunes the oldest copies beyond `keep`. The copies are
never in the hands of the account this runs as (the app's, which they
protect): it can read its database, and so it makes the copy; it cannot
remove, replace or add a copy.

argv[1] is JSON: name, and either path (the database file) or alias and
settings_module (a Django DATABASES alias). fd 3 is a socket to Caddy: the
copy goes to it as 8 bytes of length (big-endian) and the file's bytes,
and Caddy answers one byte, "k", once the copy is written, synced and
named. The copy is made first in a private temporary directory beside the
database, when that directory is this account's alone, else in $TMPDIR
or /var/tmp (.hearth-backup-<name>~*, removed at the end, and by the next run if this
one was killed). It prints one JSON line (source, size) and exits
0, or prints why and exits 1.

Run as root (a backup without app under `sudo caddy run`), it first becomes
the account that owns the database (the link, when the path is one): that
account can change the directories the database is in, and root working
there would follow its links. It stays root only for a database root owns
in directories only root can change.

Every failure is a message (what failed, as which account, and what to
do), never a traceback, and leaves no partial copy behind.

With "restore" (the copy's path, for messages) in argv[1], it puts back
the copy Caddy opened for it as fd 4 instead: the copy is read into the
temporary directory and must pass integrity_check; the current database is
first copied and handed to Caddy as above (Caddy keeps it as
<name>-before-restore-<time>.sqlite3); then the copy is written into the
database through the backup API, which holds the database's write lock
for the one step, so the app's open connections see the old data or the
new, never a mix."""
import json
import os
import pathlib
import pwd
import stat
import sqlite3
import sys
import time


def fail(message):
    print(message)
    sys.exit(1)


def brief(e):
    """An exception as one short line: its type and the first line of its
    message, cut at 200 characters."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ''
    if len(text) > 200:
        text = text[:200] + '…'
    return type(e).__name__ + (': ' + text if text else '')


def django_database(alias, settings_module):
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', settings_module)
    sys.path.insert(0, os.getcwd())
    try:
        import django
        django.setup()
        from django.conf import settings
        databases = dict(settings.DATABASES)
    except Exception as e:  # the app's own error: said in a line, never a traceback quoting settings.py
        fail("the app's settings (%s) could not be loaded to find database %r: %s" % (settings_module, alias, brief(e)))
    db = databases.get(alias)
    if db is None:
        fail('the app has no database %r in DATABASES (it has: %s)' % (alias, ', '.join(databases) or 'none'))
    engine = db.get('ENGINE', '')
    if not engine.endswith('sqlite3'):
        fail('database %r uses %s, not SQLite: a backup block copies SQLite files only' % (alias, engine or 'no ENGINE'))
    name = str(db.get('NAME') or '')
    if not name or name == ':memory:' or name.startswith('file:'):
        fail('database %r has no file to copy (NAME %r)' % (alias, name))
    return os.path.abspath(name)


def walk(path):
    """Resolves path one name at a time, as the kernel does, and returns
    every name met on the way (each link and each name a link leads
    through) with its lstat, and, when a name is missing, the directory it
    would be made in; stops at the first missing name."""
    met, missing_in = [], None
    todo = [p for p in os.path.abspath(path).split('/') if p]
    current, links = '/', 0
    while todo:
        part = todo.pop(0)
        if part == '.':
            continue
        if part == '..':
            current = os.path.dirname(current) or '/'
            continue
        name = os.path.join(current, part)
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            missing_in = current
            break
        except OSError as e:
            fail('cannot check %s: %s' % (name, e.strerror))
        met.append((name, st))
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                fail('%s leads through too many symbolic links' % path)
            try:
                target = os.readlink(name)
            except OSError as e:  # changed since the lstat
                fail('cannot check %s: %s' % (name, e.strerror))
            todo = [p for p in target.split('/') if p] + todo
            if target.startswith('/'):
                current = '/'
            continue
        current = name
    return met, missing_in


def account_of(path, what, trusted=(0,)):
    """The uid a backup run as root must take for path: the owner of the
    first name on the way (links included) that is not root's (nor
    another trusted uid's), and every later such name must be that
    account's too; or 0 when trusted uids own every name, and no directory on the way is writable by
    another account (a sticky one, like /tmp, may be above: no other
    account can move what root owns in it; not the last, where SQLite
    creates files beside the database, nor one a missing name would be
    made in)."""
    met, missing_in = walk(path)
    owner = 0
    for name, st in met:
        if st.st_uid in trusted:
            continue
        if owner == 0:
            owner = st.st_uid
        elif st.st_uid != owner:
            fail('the %s %s leads through %s of uid %d after names of uid %d: a backup running as root would act for one account in the other\'s files. '
                 'Give the backup `app <name>`, or a path of one account' % (what, path, name, st.st_uid, owner))
    if owner:
        return owner
    dirs = [(name, st) for name, st in met if stat.S_ISDIR(st.st_mode)]
    last = missing_in if missing_in is not None else (dirs[-1][0] if dirs else '/')
    if missing_in is not None:
        try:
            dirs.append((missing_in, os.lstat(missing_in)))
        except OSError as e:
            fail('cannot check %s: %s' % (missing_in, e.strerror))
    as_root = trusted == (0,)
    owners = 'root\'s' if as_root else 'root\'s and Caddy\'s account\'s'
    fix = ('make the database that account\'s (chown), or ' if as_root else '') + '`chmod go-w %s`'
    for name, st in met:
        if stat.S_ISREG(st.st_mode) and others_may_write(st, trusted):
            fail('the %s %s is %s, but another account may write it (mode %03o): what it wrote would be read as a database by %s. '
                 'Give the backup `app <name>` (it then runs as that app\'s account), or %s'
                 % (what, path, owners, st.st_mode & 0o7777, 'root' if as_root else 'Caddy\'s account', fix % name))
    for name, st in dirs:
        if others_may_write(st, trusted) and (name == last or not st.st_mode & stat.S_ISVTX):
            fail('the %s %s is %s, but %s on the way has mode %03o: another account could put links or files in the way of the backup. '
                 'Give the backup `app <name>` (it then runs as that app\'s account), or %s'
                 % (what, path, owners, name, st.st_mode & 0o7777, fix % name))
    return 0


def others_may_write(st, trusted):
    """Whether an account other than the trusted ones may write the file
    or directory st describes: its group or others may. No group is taken
    as its owner's alone: who holds a group is not all in /etc/group (an
    account whose primary group it is; the apps Caddy's unit runs with
    Caddy's group), and an ACL shows in the group bits."""
    return bool(st.st_mode & 0o022)


def only_own(path, what):
    """A backup without an app run as Caddy's account when that is not
    root (`user caddy` under the unit): every name on the way to path
    (links included) must be root's or this account's, and no directory
    on the way writable by another account (as account_of). Caddy's
    account can read the databases of apps whose group it is in, so a
    link of one app's account must not make it copy another app's
    database as the first's, nor write through that link on a restore."""
    me = os.geteuid()
    met, _ = walk(path)
    for name, st in met:
        if st.st_uid not in (0, me):
            fail('the %s %s leads through %s of uid %d, not this backup\'s account (uid %d, Caddy\'s): it would copy or restore whatever that account links there. '
                 'Give the backup `app <name>` (it then runs as that app\'s account), or keep the database in a directory of Caddy\'s account' % (what, path, name, st.st_uid, me))
    account_of(path, what, (0, me))  # every name root's or ours: the directories' modes


def become_owner(source, caddys):
    """Running as root, become the account the database is in the hands of
    (account_of); stay root only when root's alone. As another account:
    a run with an app is that app's, whose files it may handle; a run
    without one is Caddy's own (caddys), and takes nothing another
    account could have put in its way (only_own)."""
    if os.geteuid() != 0:
        if caddys:
            only_own(source, 'database')
        return
    try:
        st = os.stat(source)  # the file itself, wherever links lead: only a stat, no data read
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            fail('the database %s has %d names (hard links): a backup running as root takes the account of the file it copies, '
                 'and a hard link can give any file another name; give the backup `app <name>`' % (source, st.st_nlink))
    except FileNotFoundError:
        pass
    except OSError as e:
        fail('cannot check the database %s: %s' % (source, e.strerror))
    uid = account_of(source, 'database')
    if uid == 0:
        return
    try:
        account = pwd.getpwuid(uid)
        os.initgroups(account.pw_name, account.pw_gid)
        gid = account.pw_gid
    except KeyError:  # an owner with no name: no group of its own either
        os.setgroups([])
        gid = NOGROUP
    os.setgid(gid)
    os.setuid(uid)


NOGROUP = 65534  # the group a run takes for an owner with no account name

TO_CADDY = 3  # the socket the copies go to Caddy by
COPY_IN = 4   # a restore's copy, opened by Caddy


WORK_FILES = ('copy.sqlite3', 'restore.sqlite3')  # and their -journal, -wal and -shm


def workspace(name, source):
    """A new private directory (0700) for the copy while it is made:
    beside the database (on its disk) when that directory is this
    account's alone, else in $TMPDIR, or without one /var/tmp (on disk)
    then /tmp, when sticky (no other account can move what this one makes
    there). A directory another account can write otherwise is not used:
    it could swap the workspace for a link while SQLite opens a file there
    by path. What a killed run of this backup left there is removed
    first."""
    import tempfile
    prefix = '.hearth-backup-%s~' % name  # ~: in no backup's name
    candidates = [os.path.dirname(source)]
    if not os.environ.get('TMPDIR'):
        candidates.append('/var/tmp')  # on disk, where /tmp may be memory (Debian 13)
    candidates.append(tempfile.gettempdir())
    places = []
    for place in candidates:
        try:
            st = os.stat(place)
        except OSError:
            continue
        # this account's alone, or sticky (no other account can move what
        # this one makes there)
        if (st.st_uid == os.geteuid() and not st.st_mode & 0o022) or st.st_mode & stat.S_ISVTX:
            if place not in places:
                places.append(place)
    for place in places:
        remove_stale(place, prefix)
    problems = []
    for place in places:
        try:
            return tempfile.mkdtemp(prefix=prefix, dir=place)
        except OSError as e:  # a read-only file system (the unit's ProtectSystem), or no room
            problems.append('%s: %s' % (place, e.strerror))
    fail('cannot make a temporary directory for the copy as uid %d (%s): the account the backup runs as needs a directory of its own '
         'beside the database, or a writable $TMPDIR' % (os.geteuid(), '; '.join(problems)))


def remove_stale(place, prefix):
    """Removes what killed runs of this backup left in place: directories
    named prefix… of this account, and in them only the workspace's files,
    each opened relative to its directory, never through a link."""
    try:
        top = os.open(place, os.O_RDONLY | os.O_DIRECTORY)  # (a link to it, as mkdtemp follows one)
    except OSError:
        return
    try:
        for entry in os.listdir(top):
            if entry.startswith(prefix):
                remove_work(top, entry)
    except OSError:
        pass
    finally:
        os.close(top)


def remove_work(top, entry):
    """Removes the workspace entry of the directory fd top: its files (the
    copy's, by name), then itself; only when it is a directory of this
    account (opened without following a link)."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
    except OSError:
        return
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            return
        for f in WORK_FILES:
            for suffix in ('', '-journal', '-wal', '-shm'):
                try:
                    os.unlink(f + suffix, dir_fd=fd)
                except OSError:
                    pass
    finally:
        os.close(fd)
    try:
        os.rmdir(entry, dir_fd=top)
    except OSError:
        pass


def remove_tree(path):
    """Removes the workspace at path (see remove_work)."""
    top = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        remove_work(top, os.path.basename(path))
    finally:
        os.close(top)


def hardened(db):
    """db, told to trust nothing its file says beyond its data: no
    function a schema names runs (trusted_schema), every page's cells are
    checked as read, and the file is read, not mapped (a file another
    process truncates would end the run with SIGBUS)."""
    for pragma in ('trusted_schema=OFF', 'cell_size_check=ON', 'mmap_size=0'):
        db.execute('PRAGMA ' + pragma)
    return db


def read_only(path):
    """A read-only connection to the file at path (quoted: a ?, # or %
    in a path would otherwise be read as part of the URI)."""
    return hardened(sqlite3.connect(pathlib.Path(path).as_uri() + '?mode=ro', uri=True))


def checked(path):
    """The integrity check of the SQLite file at path ('ok' when sound), or
    why it could not be read."""
    try:
        db = read_only(path)
        try:
            rows = db.execute('PRAGMA integrity_check').fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        return str(e)
    return '; '.join(r[0] for r in rows[:5])


def snapshot(source, work, what):
    """Copies the database at source into work/copy.sqlite3 through
    SQLite's backup API (every page in one step: one consistent moment)
    and checks the copy; returns its path. Any failure ends the run with
    a message."""
    path = os.path.join(work, 'copy.sqlite3')
    try:
        src = hardened(sqlite3.connect(source, timeout=60))
        try:
            dst = sqlite3.connect(path)
            try:
                src.backup(dst)
                rows = dst.execute('PRAGMA integrity_check').fetchall()
            finally:
                dst.close()
        finally:
            src.close()
    except (sqlite3.Error, OSError) as e:
        fail('cannot copy %s %s as uid %d into %s: %s (is it a SQLite database this account can read? "database is locked": another process held it for over 60 s; '
             '"disk is full": %s has no room for a copy)' % (what, source, os.geteuid(), work, e, os.path.dirname(work)))
    if rows != [('ok',)]:
        fail('the copy of %s failed PRAGMA integrity_check: %s' % (source, '; '.join(r[0] for r in rows[:5])))
    return path


def hand_to_caddy(path):
    """Sends the file at path to Caddy (TO_CADDY) and waits until Caddy
    has kept it; returns its size."""
    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        try:
            os.write(TO_CADDY, size.to_bytes(8, 'big'))
            sent = 0
            while sent < size:
                n = os.sendfile(TO_CADDY, f.fileno(), sent, min(size - sent, 1 << 20))
                if n == 0:
                    fail('the copy %s ended after %d of its %d bytes while it was handed to Caddy' % (path, sent, size))
                sent += n
            answer = os.read(TO_CADDY, 1)
        except OSError as e:
            fail('cannot hand the copy to Caddy: %s (Caddy says why on the next line)' % e.strerror)
    if answer != b'k':
        fail('Caddy did not keep the copy (it says why on the next line)')
    return size


def restore(name, source, copy, caddys):
    # as the database's owner from the start: the copy is made beside the
    # database, in that account's directory
    become_owner(source, caddys)
    work = workspace(name, source)
    try:
        incoming = os.path.join(work, 'restore.sqlite3')
        try:
            with open(incoming, 'xb') as out:
                while True:
                    chunk = os.read(COPY_IN, 1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
        except OSError as e:
            fail('cannot read the copy %s into %s as uid %d: %s' % (copy, work, os.geteuid(), e.strerror))
        check = checked(incoming)
        if check != 'ok':
            fail('the copy %s failed PRAGMA integrity_check (%s): not restored' % (copy, check))
        if os.path.isfile(source):
            hand_to_caddy(snapshot(source, work, 'the database, before the restore,'))
        try:
            src = read_only(incoming)
            try:
                dst = hardened(sqlite3.connect(source, timeout=60))
                try:
                    src.backup(dst)
                finally:
                    dst.close()
            finally:
                src.close()
        except (sqlite3.Error, OSError) as e:
            fail('cannot write the copy into the database %s as uid %d: %s; the database was not replaced'
                 % (source, os.geteuid(), e))
        check = checked(source)
        if check != 'ok':
            fail('after the restore, %s fails PRAGMA integrity_check (%s); Caddy kept the database before it (the first line)' % (source, check))
        print(json.dumps({'restored': copy, 'into': source}))
    finally:
        remove_tree(work)


def main():
    spec = json.loads(sys.argv[1])
    name = spec['name']
    if spec.get('alias'):
        source = django_database(spec['alias'], spec['settings_module'])
    else:
        source = os.path.abspath(spec['path'])
    if spec.get('restore'):
        restore(name, source, spec['restore'], spec.get('caddys', False))
        return
    become_owner(source, spec.get('caddys', False))
    if not os.path.isfile(source):
        fail('the database %s does not exist (yet): nothing to back up' % source)
    work = workspace(name, source)
    try:
        size = hand_to_caddy(snapshot(source, work, 'the database'))
    finally:
        remove_tree(work)
    print(json.dumps({'source': source, 'size': size}))


if __name__ == '__main__':
    try:
        main()
    except (OSError, sqlite3.Error) as e:  # what no step above expected: still a message
        fail('failed as uid %d: %s' % (os.geteuid(), e))
    except Exception as e:  # never a traceback: it may quote the app's settings
        fail('failed as uid %d: %s' % (os.geteuid(), brief(e)))
