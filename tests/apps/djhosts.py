"""A Django app whose ALLOWED_HOSTS is ['localhost'] and nothing else, on
settings that pass the guard. Every request that reaches it is logged as
"djhosts saw <Host>", before Django looks at the host."""
import sys

import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY='djhosts-test-only-not-a-secret-Qw7Rt2Yu9Io4Pa6Sd1Fg8Hj3Kl5',
    ALLOWED_HOSTS=['localhost'],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=['django.middleware.csrf.CsrfViewMiddleware'],
    AUTH_PASSWORD_VALIDATORS=[{'NAME': 'django.contrib.auth.password_validation.MinimumLengthValidator'}],
)
django.setup()


def hello(request):
    return HttpResponse('hello from %s' % request.get_host())


urlpatterns = [path('', hello)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

django_app = get_wsgi_application()


def application(environ, start_response):
    sys.stderr.write('djhosts saw %s\n' % environ.get('HTTP_HOST'))
    return django_app(environ, start_response)
