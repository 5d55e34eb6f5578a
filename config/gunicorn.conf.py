"""gunicorn settings for `make serve`, taken from the project's settings (so
PORT, WEB_WORKERS and WEB_THREADS come from the environment or `.env`).

gthread: each process serves WEB_THREADS requests at once and keeps client
connections alive; measured against the sync worker class in bench/README.md.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings

wsgi_app = "config.wsgi:application"
bind = f"0.0.0.0:{settings.PORT}"
workers = settings.WEB_WORKERS
threads = settings.WEB_THREADS
worker_class = "gthread"
