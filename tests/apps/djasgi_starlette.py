"""djasgi's Django project in a worker that imported Starlette first, as
Sentry's SDK does wherever Starlette is installed."""
import starlette.routing  # noqa: F401

from djasgi import application  # noqa: F401,E402
