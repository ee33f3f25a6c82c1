"""`manage.py prepare`: everything the site needs before it serves.

The Caddyfile runs it with `before_start python manage.py prepare`, so a
fresh checkout (no database, no collected static files) just works.
"""

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Apply migrations and collect static files (run before the workers start)."

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=options["verbosity"])
        call_command("collectstatic", interactive=False, verbosity=options["verbosity"])
