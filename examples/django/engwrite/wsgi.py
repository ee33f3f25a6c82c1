"""WSGI entry point: Hearth serves it as `wsgi engwrite.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "engwrite.settings")

application = get_wsgi_application()
