"""gunicorn settings for `make serve`, taken from the project's settings (so
PORT, WEB_SERVER, WEB_WORKERS and WEB_THREADS come from the environment or `.env`).

WEB_SERVER=asgi (default): gunicorn manages WEB_WORKERS uvicorn processes
serving config/asgi.py. Each holds its connections on an event loop: an idle
client, a slow upload (the body is read on the loop before Django sees the
request), a `?wait=` long-poll or an event stream costs a socket, not a
thread, so none of them can keep /health or POST /tasks waiting (gthread's
WEB_WORKERS x WEB_THREADS threads could all be held by 16 such clients).
Synchronous views still run in threads, WEB_THREADS per process
(config/asgi.py; bench.slowclients and bench.submit measure both tiers).

WEB_SERVER=gthread: the former WSGI tier, kept for comparison.
"""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings

# Each of the WEB_WORKERS processes counts the requests it serves; in files
# of one directory, /metrics adds them up whichever process answers the
# scrape (config/http_metrics.py). Without a directory configured, one of our
# own. The workers are forked from this process, so they inherit both.
# A reload (SIGHUP) runs this file again in the same process, with the
# directory set by then: which one is ours is kept in the environment.
_OWN_DIR = "TASK_RUNNER_OWN_METRICS_DIR"
if not settings.PROMETHEUS_MULTIPROC_DIR:
    settings.PROMETHEUS_MULTIPROC_DIR = tempfile.mkdtemp(prefix="task-runner-http-metrics-")
    os.environ[_OWN_DIR] = settings.PROMETHEUS_MULTIPROC_DIR
os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings.PROMETHEUS_MULTIPROC_DIR


def on_starting(server):
    # Files left by an earlier run would add its requests to this run's
    # counters (and their pids may be reused): start from zero.
    for leftover in Path(settings.PROMETHEUS_MULTIPROC_DIR).glob("*.db"):
        leftover.unlink()


def on_exit(server):
    if os.environ.get(_OWN_DIR) == settings.PROMETHEUS_MULTIPROC_DIR:
        shutil.rmtree(settings.PROMETHEUS_MULTIPROC_DIR, ignore_errors=True)


bind = f"0.0.0.0:{settings.PORT}"
workers = settings.WEB_WORKERS
if settings.WEB_SERVER == "asgi":
    wsgi_app = "config.asgi:application"
    worker_class = "uvicorn_worker.UvicornWorker"
else:
    wsgi_app = "config.wsgi:application"
    worker_class = "gthread"
    threads = settings.WEB_THREADS

# The response's X-Request-ID (config/logs.py) on each access line.
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-request-id}o)s'
)
if settings.LOG_FORMAT == "json":
    # gunicorn's own lines (start, workers, access) as JSON too.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "config.logs.JsonFormatter"}},
        "filters": {"context": {"()": "config.logs.ContextFilter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["context"],
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": settings.LOG_LEVEL, "handlers": ["console"]},
        "loggers": {
            name: {"level": settings.LOG_LEVEL, "handlers": ["console"], "propagate": False}
            # uvicorn's own loggers too (its access line under WEB_SERVER=asgi).
            for name in ("gunicorn.error", "gunicorn.access", "uvicorn.error", "uvicorn.access")
        },
    }
