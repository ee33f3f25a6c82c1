"""A one-file Django project served through Django's own ASGI handler."""
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY='djasgi-test-only-not-a-secret-Zr8Qm2Lx7Vb4Nc9Wd3Ke6Ty1Pu5',
    ALLOWED_HOSTS=['127.0.0.1', 'localhost'],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=['django.middleware.csrf.CsrfViewMiddleware'],
    AUTH_PASSWORD_VALIDATORS=[{'NAME': 'django.contrib.auth.password_validation.MinimumLengthValidator'}],
)
django.setup()


async def hello(request):
    return HttpResponse('hello from django asgi at %s' % request.path)


urlpatterns = [path('hello', hello)]

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
