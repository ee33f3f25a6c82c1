"""Loading the app: its import (with a fix line for a mistyped module),
Django's URLconf at start, and Django's request errors routed to Caddy's
log."""

import sys


def nearest_module(name):
    """The importable module whose dotted name is closest to name (a typo
    such as mysite.wgsi for mysite.wsgi), or None."""
    import difflib
    import pkgutil
    parts = name.split('.')
    # the deepest package of name that imports, and the names beside it
    for depth in range(len(parts) - 1, -1, -1):
        prefix = '.'.join(parts[:depth])
        try:
            path = __import__(prefix, fromlist=['_']).__path__ if prefix else None
        except Exception:
            continue
        try:
            names = [m.name for m in pkgutil.iter_modules(path)]
        except Exception:
            return None
        if prefix:
            names = [prefix + '.' + n for n in names]
        close = difflib.get_close_matches('.'.join(parts[:depth + 1]), names, n=1, cutoff=0.6)
        if close:
            return close[0] + ('.' + '.'.join(parts[depth + 1:]) if depth + 1 < len(parts) else '')
        return None
    return None


def load_app(spec):
    """Import "module:attribute" (attribute defaults to "application")."""
    module_name, _, attr = spec.partition(':')
    attr = attr or 'application'
    try:
        module = __import__(module_name, fromlist=['_'])
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + '.')):
            raise  # the app's own import of something else failed: its traceback says what
        hint = nearest_module(module_name)
        fix = ('did you mean %s? (the app is "%s:%s")' % (hint, hint, attr) if hint
               else 'check the module path in the wsgi/asgi line and the `dir` setting')
        raise ModuleNotFoundError('no module %r in %s (looked for by the app %r): %s'
                                  % (module_name, sys.path[0], spec, fix), name=exc.name) from None
    obj = module
    for part in attr.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError('module %r has no attribute %r (from HEARTH app spec %r)'
                                 % (module_name, attr, spec)) from None
    if not callable(obj):
        raise TypeError('%s is a %s, not a callable WSGI application' % (spec, type(obj).__name__))
    return obj


def import_urlconf():
    """Import a Django project's URLconf, and so its views, now. Django
    imports it at the first request: code that cannot be imported would
    start, then answer every visitor with 500. This way it fails the start
    (or the restart, and the running workers keep serving) with its
    traceback."""
    conf = sys.modules.get('django.conf')
    if conf is None or not conf.settings.configured:
        return
    from django.urls import get_resolver
    get_resolver().url_patterns


def route_request_errors():
    """Make Django's request errors reach Caddy's log.

    With DEBUG off and no LOGGING setting, Django sends an unhandled
    exception in a view to mail_admins only (its console handler wants
    DEBUG): the visitor gets "Server Error (500)" and no log says why.
    Then one handler on the 'django.request' logger writes each such error
    to stderr, which is Caddy's log: once, with the method, the path and
    the traceback. An app that configures LOGGING keeps its own."""
    conf = sys.modules.get('django.conf')
    if conf is None:
        return
    try:
        settings = conf.settings
        if not settings.configured or settings.DEBUG or getattr(settings, 'LOGGING', None):
            return
    except Exception:
        return
    import logging

    class RequestErrors(logging.Formatter):
        def format(self, record):
            request = getattr(record, 'request', None)
            method = getattr(request, 'method', None) or '-'
            return 'request error (%s): %s' % (method, super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(RequestErrors('%(message)s'))
    logging.getLogger('django.request').addHandler(handler)
