"""Hearth's worker runtime as a package: protocol (frames), wsgi, asgi,
forkserver (preload), loading (the app's import) and inspection (facts for
the guard's checks). hearth_worker.py, beside this package, is the program
Caddy starts. Standard library only; Python 3.9+."""
