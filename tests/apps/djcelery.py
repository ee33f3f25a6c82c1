"""A one-file Django app with a Celery task, for Hearth's services: GET
/add?x=2&y=3 enqueues add(2, 3) on the Redis broker at REDIS_URL and
answers the worker's result, which says what the worker's environment
held (the key only by its length) and the worker's pid."""
import json
import os

import django
from celery import Celery
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get('SECRET_KEY', ''),
    ALLOWED_HOSTS=['*'],
    ROOT_URLCONF=__name__,
)
django.setup()

celery_app = Celery('djcelery', broker=os.environ['REDIS_URL'], backend=os.environ['REDIS_URL'])
celery_app.conf.broker_connection_retry_on_startup = True
celery_app.conf.worker_hijack_root_logger = False


@celery_app.task
def add(x, y):
    return {
        'sum': x + y,
        'key_length': len(os.environ.get('SECRET_KEY', '')),
        'marker': os.environ.get('SERVICE_MARKER', ''),
        'pid': os.getpid(),
        'ppid': os.getppid(),
    }


def add_view(request):
    result = add.delay(int(request.GET.get('x', '0')), int(request.GET.get('y', '0')))
    return HttpResponse(json.dumps(result.get(timeout=15)), content_type='application/json')


urlpatterns = [path('add', add_view)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
