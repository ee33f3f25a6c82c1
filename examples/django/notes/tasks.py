"""Background tasks of the notes app, run by the Celery worker."""
from celery import shared_task


@shared_task
def count_notes():
    """How many notes there are (a stand-in for real work: e-mail, reports)."""
    from .models import Note

    return Note.objects.count()
