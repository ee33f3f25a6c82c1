"""A one-file Django app with DEBUG = True: an exception renders Django's
technical 500 page, an unknown URL its technical 404 page (both leak
settings and code)."""
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=True,
    SECRET_KEY='test-only-djdebug-0123456789abcdefghijklmnopqrstuvwxyz',
    ALLOWED_HOSTS=['*'],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
)
django.setup()


def boom(request):
    raise RuntimeError('database password is hunter2')


def ok(request):
    return HttpResponse('fine')


urlpatterns = [path('boom', boom), path('ok', ok)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
