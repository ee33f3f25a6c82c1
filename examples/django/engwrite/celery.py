"""engwrite's Celery app: background tasks (notes/tasks.py) run by the
`celery` service of examples/homeserver/Caddyfile, with the `redis` service
as broker and result store (CELERY_BROKER_URL, set in engwrite's block).
Nothing imports it but the worker and the code that sends tasks, so serving
the site does not need Celery installed."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "engwrite.settings")

broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6390/0")
app = Celery("engwrite", broker=broker, backend=broker)
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False
app.autodiscover_tasks()
