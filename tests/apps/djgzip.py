"""A one-file Django app with DEBUG = True behind Django's own
GZipMiddleware: its technical 500, 404 and DisallowedHost (400) pages leak
settings and code, gzip-compressed for clients that accept gzip. Only
127.0.0.1 and app.example are allowed hosts."""
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=True,
    SECRET_KEY='test-only-djgzip-0123456789abcdefghijklmnopqrstuvwxyz',
    ALLOWED_HOSTS=['127.0.0.1', 'app.example'],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        'django.middleware.gzip.GZipMiddleware',
        'django.middleware.common.CommonMiddleware',  # reads the Host: DisallowedHost
    ],
)
django.setup()


def boom(request):
    raise RuntimeError('database password is hunter2')


def ok(request):
    return HttpResponse('fine ' * 200)  # long enough to be compressed, by Django and by Caddy


urlpatterns = [path('boom', boom), path('ok', ok)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
