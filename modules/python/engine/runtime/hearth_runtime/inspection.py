"""What the guard's checks need to know about an app before it serves:
Django's settings, deploy checks and migrations, Flask's config, the
environment's debug flags. Secret values never leave this module, only
facts about them."""

import os
import sys


# Names that betray a placeholder secret rather than a generated one.
PLACEHOLDER_WORDS = ('changeme', 'change-me', 'change_me', 'secret', 'password', 'your', 'example',
                     'insecure', 'default', 'dummy', 'test', 'xxx', 'todo', 'replace', 'django')


def looks_generated(value):
    """True for a key shaped like a generator's output: at least three of
    lower case, upper case, digits and other characters, and at least 24
    distinct characters. Random keys (Django's get_random_secret_key,
    secrets.token_urlsafe, `caddy hearth secret-key`) are, with overwhelming
    probability; phrases written by people are not. A placeholder word found
    by chance inside such a key (about 1 generated key in 300 holds one of
    them) does not make it a placeholder."""
    classes = (any(c.islower() for c in value) + any(c.isupper() for c in value)
               + any(c.isdigit() for c in value) + any(not c.isalnum() for c in value))
    return classes >= 3 and len(set(value)) >= 24


def describe_secret(value):
    """Facts about a secret key that judge its strength without revealing it."""
    if value is None:
        return {'present': False}
    if isinstance(value, bytes):
        value = value.decode('latin-1')
    value = str(value)
    lowered = value.lower()
    repeated = False
    for size in range(1, len(value) // 2 + 1):
        if len(value) % size == 0 and value[:size] * (len(value) // size) == value:
            repeated = True
            break
    worded = any(w in lowered for w in PLACEHOLDER_WORDS) and not looks_generated(value)
    return {
        'present': bool(value),
        'length': len(value),
        'distinct': len(set(value)),
        'insecure_prefix': value.startswith('django-insecure-'),
        'placeholder': repeated or worded,
    }


def tracked_files_containing(secret):
    """Files tracked by git under the app directory that contain secret
    literally (their names only)."""
    if not secret or len(secret) < 8:
        return []
    import subprocess
    # as Caddy's trackedByGit runs git: a repository of another account
    # (the deploy user's) is read (git refuses it as "dubious ownership"
    # otherwise, and the key went unchecked), with the programs its config
    # may name off and no system or global config
    env = {'PATH': '/usr/local/bin:/usr/bin:/bin', 'LC_ALL': 'C', 'GIT_CONFIG_NOSYSTEM': '1',
           'GIT_CONFIG_GLOBAL': '/dev/null', 'GIT_TERMINAL_PROMPT': '0', 'GIT_OPTIONAL_LOCKS': '0'}
    try:
        listing = subprocess.run(['git', '-c', 'safe.directory=*', '-c', 'core.fsmonitor=false', 'ls-files', '-z'],
                                 capture_output=True, timeout=20, check=True, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    needle = secret.encode('utf-8', 'replace') if isinstance(secret, str) else bytes(secret)
    found = []
    for name in listing.decode('utf-8', 'replace').split('\0'):
        try:
            if name and os.path.getsize(name) <= 1 << 20:
                with open(name, 'rb') as f:
                    if needle in f.read():
                        found.append(name)
        except OSError:
            pass
    return found


def sqlite_databases():
    """SQLite databases of the Django settings, and whether this user can
    write them and their directory (for the journal)."""
    from django.conf import settings
    out = []
    for alias, db in (getattr(settings, 'DATABASES', {}) or {}).items():
        if 'sqlite3' not in str(db.get('ENGINE', '')):
            continue
        name = str(db.get('NAME', ''))
        if not name or name == ':memory:' or name.startswith('file:'):
            continue
        path = os.path.abspath(name)
        directory = os.path.dirname(path)
        out.append({
            'alias': alias,
            'path': path,
            'file_writable': os.access(path, os.W_OK) if os.path.exists(path) else None,
            'dir_writable': os.access(directory, os.W_OK),
        })
    return out


def deploy_checks():
    """Django's own deployment checks (`check --deploy`), including those
    the project silenced, which are marked as such."""
    from django.conf import settings
    from django.core import checks
    silenced = list(getattr(settings, 'SILENCED_SYSTEM_CHECKS', []) or [])
    try:
        settings.SILENCED_SYSTEM_CHECKS = []
        messages = checks.run_checks(include_deployment_checks=True)
    except Exception as exc:  # a check that crashes is reported, not fatal
        return [{'id': 'run', 'level': 40, 'msg': 'the checks failed: %s' % exc, 'silenced': False}]
    finally:
        settings.SILENCED_SYSTEM_CHECKS = silenced
    return [{'id': m.id or '', 'level': m.level, 'msg': str(m.msg), 'hint': str(m.hint or ''),
             'silenced': m.id in silenced} for m in messages if m.level >= checks.WARNING]


def migration_state():
    """Which migrations the default database lacks, and which apps have
    model changes without a migration (makemigrations --check). A SQLite
    database that does not exist yet is never created here: all its
    migrations are unapplied."""
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.loader import MigrationLoader
    state = {'unapplied': [], 'unapplied_count': 0, 'changed_apps': [], 'error': ''}
    try:
        loader = MigrationLoader(None, ignore_no_migrations=True)
        graph = loader.graph
        targets = graph.leaf_nodes()
        db = connections.databases.get(DEFAULT_DB_ALIAS, {})
        name = str(db.get('NAME', ''))
        if 'sqlite3' in str(db.get('ENGINE', '')) and name and name != ':memory:' \
                and not name.startswith('file:') and not os.path.exists(name):
            applied = set()
        else:
            from django.db.migrations.recorder import MigrationRecorder
            applied = set(MigrationRecorder(connections[DEFAULT_DB_ALIAS]).applied_migrations())
        unapplied = []
        for target in targets:
            for node in graph.forwards_plan(target):
                if node not in applied and node not in unapplied:
                    unapplied.append(node)
        state['unapplied_count'] = len(unapplied)
        state['unapplied'] = ['%s.%s' % node for node in unapplied[:3]]
    except Exception as exc:  # an unreachable database is reported, not fatal
        state['error'] = '%s: %s' % (type(exc).__name__, exc)
        return state
    try:
        from django.apps import apps
        from django.db.migrations.autodetector import MigrationAutodetector
        from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
        from django.db.migrations.state import ProjectState
        detector = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps),
                                         NonInteractiveMigrationQuestioner(dry_run=True))
        state['changed_apps'] = sorted(detector.changes(graph=graph))
    except Exception as exc:
        state['error'] = '%s: %s' % (type(exc).__name__, exc)
    return state


def copies_of(secret, settings):
    """The settings other than SECRET_KEY (upper-case names; dicts, lists,
    tuples and sets looked into, a few levels deep) holding secret or a
    string that contains it: values settings.py computed from its own key
    at import (SIMPLE_JWT's SIGNING_KEY, SECRET_KEY_FALLBACKS), which
    `settings overlay` does not reach by setting SECRET_KEY after it."""
    needle = secret if isinstance(secret, str) else bytes(secret).decode('latin-1')
    exact = len(needle) < 8  # a short key is looked for whole, not inside strings
    budget = [10000]  # values looked at, at most

    def holds(value, depth):
        budget[0] -= 1
        if budget[0] < 0 or depth > 6:
            return False
        if isinstance(value, bytes):
            value = value.decode('latin-1')
        if isinstance(value, str):
            return value == needle if exact else needle in value
        if isinstance(value, dict):
            return any(holds(k, depth + 1) or holds(v, depth + 1) for k, v in value.items())
        if isinstance(value, (list, tuple, set, frozenset)):
            return any(holds(v, depth + 1) for v in value)
        return False

    return sorted(name for name in dir(settings)
                  if name.isupper() and name != 'SECRET_KEY' and holds(getattr(settings, name, None), 0))


def project_key_copies(settings):
    """Under `settings overlay`, the project's own SECRET_KEY (the one
    settings.py set, which the overlay replaced) when other settings hold
    a copy of it: described as a secret, never shown."""
    if not os.environ.get('HEARTH_PROJECT_SETTINGS'):
        return None
    base = sys.modules.get(os.environ['HEARTH_PROJECT_SETTINGS'])
    original = getattr(base, 'SECRET_KEY', None)
    if not original or original == getattr(settings, 'SECRET_KEY', None):
        return None
    copied = copies_of(original, settings)
    if not copied:
        return None
    return dict(describe_secret(original), in_files=tracked_files_containing(original), copied_to=copied)


def inspect_django():
    from django.conf import settings
    secret = getattr(settings, 'SECRET_KEY', None)
    report = {
        'migrations': migration_state(),
        'deploy_checks': deploy_checks(),
        'debug': bool(getattr(settings, 'DEBUG', False)),
        'secret_key': dict(describe_secret(secret), in_files=tracked_files_containing(secret)),
        'sqlite': sqlite_databases(),
        'allowed_hosts': [str(h) for h in getattr(settings, 'ALLOWED_HOSTS', [])],
        'csrf_middleware': 'django.middleware.csrf.CsrfViewMiddleware' in list(getattr(settings, 'MIDDLEWARE', None) or []),
        'csrf_trusted_origins': [str(o) for o in getattr(settings, 'CSRF_TRUSTED_ORIGINS', [])],
        'password_validators': len(getattr(settings, 'AUTH_PASSWORD_VALIDATORS', []) or []),
        'debug_tooling': [a for a in getattr(settings, 'INSTALLED_APPS', [])
                          if str(a).split('.')[0] in ('debug_toolbar', 'django_extensions', 'silk')],
    }
    copies = project_key_copies(settings)
    if copies:
        report['project_secret_key'] = copies
    return report


def inspect_flask(app):
    secret = app.config.get('SECRET_KEY')
    return {
        'debug': bool(getattr(app, 'debug', False)),
        'secret_key': dict(describe_secret(secret), in_files=tracked_files_containing(secret)),
    }


def inspect(app):
    """What the pre-launch guard checks need to know, as JSON-ready data.
    Secret values never leave this function."""
    report = {'framework': 'unknown', 'env_flags': {}}
    for flag in ('FLASK_DEBUG', 'DJANGO_DEBUG', 'PYTHONDEVMODE', 'WERKZEUG_DEBUG_PIN', 'DEBUG'):
        value = os.environ.get(flag)
        if value is not None and value.strip().lower() not in ('', '0', 'false', 'no', 'off'):
            report['env_flags'][flag] = value if flag != 'WERKZEUG_DEBUG_PIN' else 'set'
    conf = sys.modules.get('django.conf')
    if conf is not None and conf.settings.configured:
        report['framework'] = 'django'
        report['django'] = inspect_django()
        overlay = sys.modules.get(os.environ.get('DJANGO_SETTINGS_MODULE', ''))
        if overlay is not None and hasattr(overlay, 'applied') and os.environ.get('HEARTH_PROJECT_SETTINGS'):
            report['overlay'] = {'module': os.environ['HEARTH_PROJECT_SETTINGS'],
                                 'applied': {k: v for k, v in overlay.applied.items()}}
        return report
    flask = sys.modules.get('flask')
    if flask is not None:
        debugger = type(app).__name__ == 'DebuggedApplication'  # Werkzeug's debugger around the app
        target = getattr(app, 'app', None) if debugger else app
        if isinstance(target, flask.Flask):
            report['framework'] = 'flask'
            report['flask'] = dict(inspect_flask(target), debugger=debugger)
    return report
