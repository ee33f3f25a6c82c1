"""A one-file Django app configured from the environment, as `settings
auto` expects: SECRET_KEY, DEBUG, ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS, and an
optional SQLite database (DB_PATH). GET / reports what it was given (the
key only by its length)."""
import json
import os

import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=os.environ.get('DEBUG', 'False') == 'True',
    SECRET_KEY=os.environ.get('SECRET_KEY', ''),
    ALLOWED_HOSTS=[h for h in os.environ.get('ALLOWED_HOSTS', '').split(',') if h],
    CSRF_TRUSTED_ORIGINS=[o for o in os.environ.get('CSRF_TRUSTED_ORIGINS', '').split(',') if o],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=['django.middleware.csrf.CsrfViewMiddleware'],
    AUTH_PASSWORD_VALIDATORS=[{'NAME': 'django.contrib.auth.password_validation.MinimumLengthValidator'}],
    DATABASES={'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': os.environ['DB_PATH']}}
    if os.environ.get('DB_PATH') else {},
)
django.setup()


def report(request):
    return HttpResponse(json.dumps({
        'debug': settings.DEBUG,
        'key_length': len(settings.SECRET_KEY),
        'allowed_hosts': settings.ALLOWED_HOSTS,
        'csrf_trusted_origins': settings.CSRF_TRUSTED_ORIGINS,
    }), content_type='application/json')


urlpatterns = [path('', report)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
