"""A Django app whose ALLOWED_HOSTS is ['localhost'] and nothing else, on
settings that pass the guard. Every request that reaches it is logged as
"djhosts saw <Host>", before Django looks at the host. Its SECRET_KEY
comes from `settings auto`."""
import os
import sys

import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ['SECRET_KEY'],
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
