"""Hearth's SQLite backup, run in the app's environment by a `backup` block:
an online copy through SQLite's backup API (never a plain file copy), checked
with PRAGMA integrity_check before it counts, written under a temporary name
and renamed into place, then the oldest copies beyond `keep` removed.

argv[1] is JSON: name, to, keep, and either path (the database file) or
alias and settings_module (a Django DATABASES alias). It prints one JSON line
(file, size, source, removed) and exits 0, or prints why and exits 1.

Run as root (a backup without app under `sudo caddy run`), it first becomes
the account that owns the database (the link, when the path is one): that
account can change the directories the database and its copies are in,
and root working there would follow its links. It stays root only for a
database root owns in directories only root can change, and then the
backup directory must be in root's hands alone as well: SQLite opens its
files by path, so what keeps a run as root from following another
account's links is that no name on the way is that account's. The backup
directory must belong to the account the copy runs as and be writable by
no other; a copy's name is created only if new, never through a link.

Every failure is a message (what failed, as which account, and what to
do), never a traceback, and leaves no partial copy behind.

With "restore" (a copy's path) in argv[1], it puts that copy back instead:
the copy must pass integrity_check; the current database is first copied
aside into `to` (<name>-before-restore-<time>.sqlite3); then the copy is
written into the database through the backup API, which holds the
database's write lock for the one step, so the app's open connections see
the old data or the new, never a mix."""
import json
import os
import pathlib
import pwd
import re
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


def account_of(path, what):
    """The uid a backup run as root must take for path: the owner of the
    first name on the way (links included) that is not root's, and every
    later name that is not root's must be that account's too; or 0 when
    root owns every name, and no directory on the way is writable by
    another account (a sticky one, like /tmp, may be above: no other
    account can move what root owns in it; not the last, where SQLite
    creates files beside the database, nor one a missing name would be
    made in)."""
    met, missing_in = walk(path)
    owner = 0
    for name, st in met:
        if st.st_uid == 0:
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
    for name, st in dirs:
        if st.st_mode & 0o022 and (name == last or not st.st_mode & stat.S_ISVTX):
            fail('the %s %s is root\'s, but %s on the way has mode %03o: another account could put links or files in the way of a backup running as root. '
                 'Give the backup `app <name>` (it then runs as that app\'s account), or make the database that account\'s (chown), or %s writable by no other'
                 % (what, path, name, st.st_mode & 0o7777, name))
    return 0


def become_owner(source, to):
    """Running as root, become the account the database is in the hands of
    (account_of); stay root only when root's alone, and then the backup
    directory must be root's alone too."""
    if os.geteuid() != 0:
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
        holder = account_of(os.path.join(to, 'x'), 'backup directory')
        if holder != 0:
            fail('the database %s is root\'s alone, but the backup directory %s is reached through names of uid %d: a backup running as root '
                 'would write root\'s data where that account can move it or swap in its links. Put the copies in a directory only root can change '
                 '(as root: mkdir -p -m 700 /var/backups/<name>), or give the backup `app <name>`' % (source, to, holder))
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


def open_destination(to):
    """The backup directory, made if missing and opened without following
    a link; it must belong to this account and be writable by no other."""
    try:
        os.makedirs(to, mode=0o700, exist_ok=True)
    except FileExistsError:
        fail('the backup directory %s is not a directory (a file, or a symbolic link that leads nowhere): give the path of a directory' % to)
    except OSError as e:
        uid = os.geteuid()
        fail('cannot make the backup directory %s as uid %d (%s): make it for that account, e.g. mkdir -p %s && chown %d %s && chmod 700 %s'
             % (to, uid, e.strerror, to, uid, to, to))
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
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd))
    except FileExistsError:
        fail('%s is already in the backup directory (a file or link the backup did not make): remove it' % name)
    except OSError as e:
        fail('cannot create %s in the backup directory as uid %d: %s' % (name, os.geteuid(), e.strerror))
    return '/proc/self/fd/%d/%s' % (fd, name)


def read_only(path):
    """A read-only connection to the file at path (quoted: a ?, # or %
    in a path would otherwise be read as part of the URI)."""
    return sqlite3.connect(pathlib.Path(path).as_uri() + '?mode=ro', uri=True)


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


def copy_into(source, fd, name, what):
    """Copies the database at source into a new file name of the directory
    fd through SQLite's backup API (every page in one step: one consistent
    moment), checks the copy and returns its integrity_check rows. On any
    failure the new file is removed and the run ends with a message."""
    path = create(fd, name)
    try:
        src = sqlite3.connect(source, timeout=60)
        try:
            dst = sqlite3.connect(path)
            try:
                src.backup(dst)
                return dst.execute('PRAGMA integrity_check').fetchall()
            finally:
                dst.close()
        finally:
            src.close()
    except (sqlite3.Error, OSError) as e:
        os.unlink(name, dir_fd=fd)
        fail('cannot copy %s %s as uid %d: %s (is it a SQLite database this account can read? "database is locked": another process held it for over 60 s)'
             % (what, source, os.geteuid(), e))


def restore(name, to, source, copy):
    # as the database's owner from the start: the copy is in a directory
    # that account owns, and root reading it there would follow its links
    become_owner(source, to)
    copy = os.path.abspath(copy)
    # checked here too: Caddy's account may not see into `to`, which is the
    # copies' account's
    if os.path.dirname(copy) != os.path.abspath(to):
        fail('a restore takes a copy in %s; %s is not there' % (to, copy))
    try:
        regular = stat.S_ISREG(os.lstat(copy).st_mode)
    except OSError:
        regular = False
    if not regular or not os.access(copy, os.R_OK):
        fail('the copy %s does not exist, is not a regular file (a link?), or this account (uid %d, the database\'s) cannot read it' % (copy, os.geteuid()))
    if os.path.exists(source) and os.path.samefile(copy, source):
        fail('%s is the database itself, not a copy of it' % copy)
    check = checked(copy)
    if check != 'ok':
        fail('the copy %s failed PRAGMA integrity_check (%s): not restored' % (copy, check))
    aside = None
    if os.path.isfile(source):
        fd = open_destination(to)
        aside_name = '%s-before-restore-%s.sqlite3' % (name, stamp())
        aside = os.path.join(to, aside_name)
        try:
            copy_into(source, fd, aside_name, 'the database, before the restore,')
        finally:
            os.close(fd)
    try:
        src = read_only(copy)
        try:
            dst = sqlite3.connect(source, timeout=60)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
    except (sqlite3.Error, OSError) as e:
        fail('cannot write the copy into the database %s as uid %d: %s; the database was not replaced%s'
             % (source, os.geteuid(), e, ' (its state before the restore is also in %s)' % aside if aside else ''))
    check = checked(source)
    if check != 'ok':
        fail('after the restore, %s fails PRAGMA integrity_check (%s); the database before it is %s' % (source, check, aside))
    print(json.dumps({'restored': copy, 'into': source, 'kept_aside': aside}))


def remove_partials(fd, name):
    """Removes what a run that was killed (its timeout) left in the backup
    directory: its partial copy, a regular file under the name only a
    run of this backup makes. Never pruned with the copies otherwise, each
    is a whole database copy."""
    pattern = re.compile(r'^\.%s-\d{8}T\d{9}Z\.sqlite3\.partial(-journal|-wal|-shm)?$' % re.escape(name))
    for entry in os.listdir(fd):
        if pattern.match(entry):
            try:
                if stat.S_ISREG(os.lstat(entry, dir_fd=fd).st_mode):
                    os.unlink(entry, dir_fd=fd)
            except OSError:
                pass


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
    become_owner(source, to)
    if not os.path.isfile(source):
        fail('the database %s does not exist (yet): nothing to back up' % source)
    fd = open_destination(to)
    remove_partials(fd, name)
    when = stamp()
    final_name = '%s-%s.sqlite3' % (name, when)
    partial_name = '.%s-%s.sqlite3.partial' % (name, when)
    check = copy_into(source, fd, partial_name, 'the database')
    if check != [('ok',)]:
        os.unlink(partial_name, dir_fd=fd)
        fail('the copy of %s failed PRAGMA integrity_check: %s' % (source, '; '.join(r[0] for r in check[:5])))
    try:
        copy = os.open(partial_name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            os.fsync(copy)
            size = os.fstat(copy).st_size
        finally:
            os.close(copy)
        os.rename(partial_name, final_name, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)
    except OSError as e:
        try:
            os.unlink(partial_name, dir_fd=fd)
        except OSError:
            pass
        fail('cannot keep the copy of %s in %s as uid %d: %s' % (source, to, os.geteuid(), e))
    removed, problems = prune(fd, name, final_name, keep)
    os.close(fd)
    for problem in problems:
        print(problem)
    # the last line, whole within the output tail Hearth keeps (4 KiB)
    print(json.dumps({'file': os.path.join(to, final_name), 'size': size, 'source': source,
                      'removed': removed[:10], 'removed_count': len(removed)}))
    if any(p.startswith('cannot remove') for p in problems):
        sys.exit(1)


def prune(fd, name, final_name, keep):
    """Removes the oldest copies beyond keep (by the time in their names),
    never final_name, the copy just made, and only regular files. Returns
    what it removed and the problems met, one line each."""
    pattern = re.compile(r'^%s-\d{8}T\d{9}Z\.sqlite3$' % re.escape(name))
    others, problems = [], []
    for entry in os.listdir(fd):
        if entry == final_name or not pattern.match(entry):
            continue
        try:
            if stat.S_ISREG(os.lstat(entry, dir_fd=fd).st_mode):
                others.append(entry)
        except OSError:
            pass
    future = sorted(f for f in others if f > final_name)
    if future:
        problems.append('copies named with a time later than now, kept and not counted in keep (the clock was ahead '
                        'when they were made; remove them if they are stale): %s' % ', '.join(future[:3] + (['…'] if len(future) > 3 else [])))
    # copies dated after now are kept but not counted: counted, they would
    # leave room for no real copy but the new one
    dated = sorted(f for f in others if f < final_name)
    removed = []
    for old in dated[:max(len(dated) - (keep - 1), 0)]:
        try:
            os.unlink(old, dir_fd=fd)
            removed.append(old)
        except OSError as e:
            problems.append('cannot remove the old copy %s: %s (the new copy was made)' % (old, e.strerror or e))
    return removed, problems


if __name__ == '__main__':
    try:
        main()
    except (OSError, sqlite3.Error) as e:  # what no step above expected: still a message
        fail('failed as uid %d: %s' % (os.geteuid(), e))
    except Exception as e:  # never a traceback: it may quote the app's settings
        fail('failed as uid %d: %s' % (os.geteuid(), brief(e)))
