"""A one-file Django app as most are deployed: DEBUG off, no LOGGING. A view
that raises must leave its traceback in Caddy's log (Django alone would
mail it to ADMINS and log nothing)."""
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY='test-only-djerrors-0123456789abcdefghijklmnopqrstuvwxyz-0123456789',
    ALLOWED_HOSTS=['*'],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
)
django.setup()


def boom(request):
    raise RuntimeError('hearth-test-view-failed')


def ok(request):
    return HttpResponse('fine')


urlpatterns = [path('boom', boom), path('ok', ok)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
