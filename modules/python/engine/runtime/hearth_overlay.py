"""Hearth's settings overlay for Django (`settings overlay`).

Hearth names this module as DJANGO_SETTINGS_MODULE for the workers, the
pre-launch checks, before_start and `caddy hearth manage`/`exec`. It
imports the project's own settings module (HEARTH_PROJECT_SETTINGS), takes
every setting from it, then applies what Hearth decided for production
(HEARTH_SETTINGS_OVERLAY, JSON written by Caddy; the key in HEARTH_SECRET_KEY): the secret key, DEBUG,
the allowed hosts and trusted origins of the sites, the secure cookies and
HSTS of HTTPS sites, and STATIC_ROOT when the project has none. The
project's settings.py is never edited.

Standard library only; the JSON is Caddy's, the project module is the
user's own code, imported as Django would have imported it.
"""

import json
import os
from importlib import import_module

_project = os.environ.get('HEARTH_PROJECT_SETTINGS', '')
try:
    _base = import_module(_project)
except ImportError as _exc:
    if _project and getattr(_exc, 'name', None) and _project.startswith(_exc.name):
        raise ImportError(
            "settings overlay: the project's settings module %r cannot be imported (%s). "
            "Hearth looked for it in the app's directory; name the right one with "
            "`settings overlay <module>` in the wsgi block (e.g. `settings overlay mysite.settings`)"
            % (_project, _exc)) from _exc
    raise

for _name in dir(_base):
    if _name.isupper():
        globals()[_name] = getattr(_base, _name)

_overlay = json.loads(os.environ.get('HEARTH_SETTINGS_OVERLAY') or '{}')

# applied lists the settings the overlay set (name -> value, the secret key
# as '(hidden)'), for `caddy hearth check`; lowercase, so not a setting.
applied = {}
if os.environ.get('HEARTH_SECRET_KEY'):
    SECRET_KEY = os.environ['HEARTH_SECRET_KEY']
    applied['SECRET_KEY'] = '(hidden)'
for _name, _value in (_overlay.get('set') or {}).items():
    globals()[_name] = _value
    applied[_name] = _value
for _name, _value in (_overlay.get('unset') or {}).items():
    if globals().get(_name) in (None, ''):
        globals()[_name] = _value
        applied[_name] = _value

# the key stays in the settings, nowhere else in this module; it is still in
# the environment (HEARTH_SECRET_KEY, a name Django's debug pages hide), as
# `settings auto`'s SECRET_KEY is: the app's child processes (a management
# command it runs) import these settings too
del _overlay
